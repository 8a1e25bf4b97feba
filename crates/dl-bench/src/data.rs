//! Deterministic data: every field is derived from md5 hashes of the row number, in SQL, so
//! the same sizes give byte-identical rows on every run and every machine.

/// Sizes of one run.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Base people in dl_cache.person_enrichments.
    pub people: u64,
    /// Rows in dl_override.person_overrides.
    pub overrides: u64,
    /// Of the overrides, how many are tombstoned (all on keys that have a base row).
    pub tombstoned: u64,
    /// Of the overrides, how many have no base row.
    pub override_only: u64,
    /// Row pairs for the merge-patch scenario (taken from the first base rows).
    pub merge_pairs: u64,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes::for_people(1_000_000)
    }

    pub fn quick() -> Sizes {
        Sizes::for_people(5_000)
    }

    /// The issue's proportions: 10% overrides, 5% of those tombstoned, 20% override-only;
    /// 200,000 merge pairs (or a fifth of the people when there are fewer than a million).
    pub fn for_people(people: u64) -> Sizes {
        let people = people.max(100);
        Sizes {
            people,
            overrides: people / 10,
            tombstoned: people / 200,
            override_only: people / 50,
            merge_pairs: (people / 5).min(200_000),
        }
    }

    /// Overrides on keys that have a base row.
    pub fn overrides_on_base(&self) -> u64 {
        self.overrides - self.override_only
    }

    /// Every key that may exist in the resolved view (base keys and override-only keys).
    pub fn key_space(&self) -> u64 {
        self.people + self.override_only
    }
}

pub const HELPERS: &str = r#"
CREATE SCHEMA bench;
-- An integer in [0, m) from 7 hex digits of h starting at pos (1..26).
CREATE FUNCTION bench.hn(h text, pos integer, m integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (('x' || substr(h, pos, 7))::bit(28)::integer % m);
CREATE FUNCTION bench.pick(arr text[], h text, pos integer) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN arr[1 + bench.hn(h, pos, cardinality(arr))];

-- The naive baseline of scenario 6: RFC 7396 JSON Merge Patch in PL/pgSQL.
CREATE FUNCTION bench.plpgsql_merge_patch(target jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $fn$
DECLARE
    result jsonb;
    k text;
    v jsonb;
BEGIN
    IF patch IS NULL THEN
        RETURN target;
    END IF;
    IF jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR jsonb_typeof(target) <> 'object' THEN
        result := '{}'::jsonb;
    ELSE
        result := target;
    END IF;
    FOR k, v IN SELECT e.key, e.value FROM jsonb_each(patch) AS e LOOP
        IF jsonb_typeof(v) = 'null' THEN
            result := result - k;
        ELSE
            result := jsonb_set(result, ARRAY[k], bench.plpgsql_merge_patch(result -> k, v), true);
        END IF;
    END LOOP;
    RETURN result;
END
$fn$;
"#;

const FIRST: &str = "'{Anna,Ben,Carla,David,Elena,Farid,Grace,Hiro,Ines,Jonas,Kemal,Lena,Marco,Nadia,Oskar,Priya,Quinn,Rosa,Stefan,Tara,Umar,Vera,Wei,Xenia,Yusuf,Zoe,Maria,Mark,Marta,Anders}'::text[]";
const LAST: &str = "'{Schmidt,Garcia,Nguyen,Okafor,Rossi,Kowalski,Tanaka,Silva,Novak,Johansson,Dubois,Murphy,Khan,Cohen,Fischer,Lopez,Ivanov,Martin,Berg,Costa,Haddad,Singh,Weber,Moreau}'::text[]";
const COMPANY: &str = "'{Acme,Globex,Initech,Umbrella,Hooli,Vandelay,Stark,Wayne,Wonka,Tyrell,Cyberdyne,Soylent,Aperture,Gringotts,Monarch,Oscorp,Pied Piper,Dunder Mifflin,Massive Dynamic,Blue Sun}'::text[]";
const TITLE: &str = "'{Software Engineer,Data Scientist,Product Manager,Head of Sales,Account Executive,CTO,VP Marketing,Designer,Recruiter,Customer Success Manager,Founder,CFO,Analyst,SRE,Solutions Architect}'::text[]";
const CITY: &str = "'{Berlin,Paris,London,Madrid,Lisbon,Warsaw,Stockholm,New York,Austin,Toronto,Sao Paulo,Tokyo,Singapore,Sydney,Lagos,Nairobi,Bangalore,Dubai}'::text[]";
const COUNTRY: &str = "'{DE,FR,GB,ES,PT,PL,SE,US,US,CA,BR,JP,SG,AU,NG,KE,IN,AE}'::text[]";
const SKILL: &str = "'{python,rust,sql,postgres,sales,negotiation,kubernetes,react,go,marketing,finance,design,ml,leadership,hiring,excel}'::text[]";
const STATUS: &str = "'{active,active,active,active,inactive,churned,prospect,lead}'::text[]";
const SOURCE: &str = "'{pdl,clearbit,apollo,zoominfo}'::text[]";
const TAG: &str =
    "'{icp,enterprise,smb,champion,decision-maker,newsletter,event-2025,webinar,trial,partner}'::text[]";

/// The base people: 10-20 identity fields with nested objects and arrays, and a raw payload
/// of about 1.5 KB (jsonb) with nested arrays of objects.
pub fn people_src_sql(people: u64) -> String {
    format!(
        r#"
CREATE TABLE bench.people_src AS
WITH g AS (
    SELECT i, md5('a' || i) AS a, md5('b' || i) AS b, md5('c' || i) AS c, md5('d' || i) AS d
      FROM generate_series(1, {people}) AS i
), n AS (
    SELECT g.*,
           bench.pick({FIRST}, a, 1) AS fn,
           bench.pick({LAST}, a, 8) AS ln,
           bench.pick({COMPANY}, a, 15) AS co,
           bench.pick({COMPANY}, a, 22) AS co2,
           bench.pick({COMPANY}, b, 22) AS co3,
           bench.pick({TITLE}, b, 1) AS title,
           bench.pick({TITLE}, b, 8) AS title2,
           bench.hn(b, 15, 18) AS place,
           bench.pick({STATUS}, c, 20) AS status,
           bench.pick({SOURCE}, d, 20) AS source
      FROM g
)
SELECT i,
       'person-' || i AS identity_key,
       jsonb_build_object(
           'first_name', fn,
           'last_name', ln,
           'full_name', CASE WHEN bench.hn(b, 8, 10) = 0 THEN NULL ELSE fn || ' ' || ln END,
           'email', lower(fn) || '.' || lower(ln) || '.' || substr(c, 1, 4) || '@' || replace(lower(co), ' ', '') || '.com',
           'phone', '+1-555-' || lpad(bench.hn(c, 5, 10000)::text, 4, '0'),
           'title', title,
           'seniority', (ARRAY['junior','mid','senior','lead','executive'])[1 + bench.hn(c, 9, 5)],
           'department', (ARRAY['engineering','sales','marketing','finance','operations','product'])[1 + bench.hn(c, 13, 6)],
           'company', jsonb_build_object('name', co, 'domain', replace(lower(co), ' ', '') || '.com',
                                         'size', (ARRAY['1-10','11-50','51-200','201-1000','1000+'])[1 + bench.hn(d, 1, 5)],
                                         'industry', (ARRAY['software','retail','finance','health','media'])[1 + bench.hn(d, 5, 5)]),
           'location', jsonb_build_object('city', ({CITY})[1 + place], 'country', ({COUNTRY})[1 + place],
                                          'timezone', 'UTC' || CASE WHEN place < 7 THEN '+1' WHEN place < 10 THEN '-5' ELSE '+8' END),
           'linkedin_url', 'https://www.linkedin.com/in/' || lower(fn) || '-' || lower(ln) || '-' || substr(c, 5, 8),
           'twitter', '@' || lower(fn) || substr(c, 13, 4),
           'skills', jsonb_build_array(bench.pick({SKILL}, d, 9), bench.pick({SKILL}, d, 13), bench.pick({SKILL}, d, 17)),
           'languages', jsonb_build_array('en', (ARRAY['de','fr','es','pt','ja','hi'])[1 + bench.hn(d, 24, 6)]),
           'verified', bench.hn(b, 19, 3) > 0,
           'confidence', round(bench.hn(b, 24, 1000) / 1000.0, 3)
       ) AS identity_payload,
       jsonb_build_object(
           'provider_id', c,
           'provider', source,
           'schema_version', 3,
           'profile', jsonb_build_object('headline', title || ' at ' || co,
                                         'summary', a || ' ' || b || ' ' || c || ' ' || d,
                                         'connections', bench.hn(d, 3, 5000),
                                         'open_to_work', bench.hn(d, 7, 4) = 0),
           'experience', jsonb_build_array(
               jsonb_build_object('company', co, 'title', title, 'start_year', 2015 + bench.hn(a, 3, 10), 'current', true,
                                  'description', b || c),
               jsonb_build_object('company', co2, 'title', title2, 'start_year', 2008 + bench.hn(a, 5, 5),
                                  'end_year', 2014 + bench.hn(a, 9, 2), 'description', c || d),
               jsonb_build_object('company', co3, 'title', 'Intern', 'start_year', 2005 + bench.hn(a, 11, 3),
                                  'end_year', 2008, 'description', d || a)),
           'education', jsonb_build_array(
               jsonb_build_object('school', 'University of ' || ({CITY})[1 + bench.hn(a, 20, 18)], 'degree', 'MSc', 'year', 2000 + bench.hn(a, 13, 20)),
               jsonb_build_object('school', 'College of ' || ({CITY})[1 + bench.hn(a, 17, 18)], 'degree', 'BSc', 'year', 1996 + bench.hn(a, 19, 20))),
           'emails', jsonb_build_array(
               jsonb_build_object('address', lower(fn) || '.' || lower(ln) || '@' || replace(lower(co), ' ', '') || '.com', 'type', 'work', 'valid', true),
               jsonb_build_object('address', lower(fn) || substr(d, 1, 6) || '@mail.example', 'type', 'personal', 'valid', bench.hn(d, 11, 2) = 0)),
           'phones', jsonb_build_array(jsonb_build_object('number', '+1-555-' || lpad(bench.hn(c, 5, 10000)::text, 4, '0'), 'type', 'mobile')),
           'social', jsonb_build_object('github', lower(fn) || substr(b, 3, 5), 'twitter', '@' || lower(fn) || substr(c, 13, 4),
                                        'followers', bench.hn(b, 5, 20000)),
           'scores', jsonb_build_object('intent', bench.hn(c, 17, 100), 'fit', bench.hn(c, 21, 100), 'engagement', bench.hn(d, 21, 100)),
           'tags', jsonb_build_array(bench.pick({TAG}, b, 11), bench.pick({TAG}, b, 17))
       ) AS raw_payload,
       status,
       source,
       timestamptz '2026-01-01 00:00:00+00' - bench.hn(d, 15, 31536000) * interval '1 second' AS fetched_at,
       timestamptz '2026-01-01 00:00:00+00' - bench.hn(d, 15, 31536000) * interval '1 second' AS updated_at
  FROM n
"#
    )
}

/// The overrides: the first `overrides_on_base` on base keys spread over the key range
/// (every `tomb_every`-th of them tombstoned), the rest on keys with no base row.
pub fn overrides_src_sql(s: &Sizes) -> String {
    let on_base = s.overrides_on_base();
    let people = s.people;
    let tomb_every = (on_base / s.tombstoned.max(1)).max(1);
    // 7919 is prime and does not divide any size we use, so k -> k*7919 mod people is a
    // permutation of the base keys.
    format!(
        r#"
CREATE TABLE bench.overrides_src AS
WITH k AS (
    SELECT k,
           CASE WHEN k <= {on_base} THEN 'person-' || ((k * 7919) % {people} + 1)
                ELSE 'person-' || ({people} + k - {on_base}) END AS identity_key,
           (k <= {on_base} AND k % {tomb_every} = 0) AS tombstoned,
           k > {on_base} AS override_only,
           md5('o' || k) AS h, md5('p' || k) AS h2
      FROM generate_series(1::bigint, {overrides}) AS k
)
SELECT identity_key,
       (ARRAY['customer', NULL, 'do_not_contact', NULL])[1 + bench.hn(h, 1, 4)] AS status,
       CASE WHEN override_only THEN
           jsonb_build_object('first_name', bench.pick({FIRST}, h, 3), 'last_name', bench.pick({LAST}, h, 9),
                              'full_name', bench.pick({FIRST}, h, 3) || ' ' || bench.pick({LAST}, h, 9),
                              'email', lower(bench.pick({FIRST}, h, 3)) || '@manual.example',
                              'title', bench.pick({TITLE}, h, 15),
                              'company', jsonb_build_object('name', bench.pick({COMPANY}, h, 20)))
       ELSE
           jsonb_build_object('title', bench.pick({TITLE}, h, 15),
                              'department', NULL,
                              'location', jsonb_build_object('city', ({CITY})[1 + bench.hn(h, 20, 18)], 'timezone', NULL))
           || CASE WHEN bench.hn(h, 24, 10) < 3
                   THEN jsonb_build_object('display_name', bench.pick({FIRST}, h, 3) || ' (' || bench.pick({COMPANY}, h, 20) || ')')
                   ELSE '{{}}'::jsonb END
       END AS identity_payload_patch,
       jsonb_build_object('crm', jsonb_build_object('owner', bench.pick({FIRST}, h2, 1) || '@customer.example',
                                                    'stage', (ARRAY['new','qualified','won','lost'])[1 + bench.hn(h2, 8, 4)],
                                                    'notes', h || h2),
                          'tags', jsonb_build_array('customer-edited', bench.pick({TAG}, h2, 15)),
                          'scores', jsonb_build_object('fit', bench.hn(h2, 20, 100), 'engagement', NULL)) AS raw_payload_patch,
       tombstoned,
       timestamptz '2026-01-01 00:00:00+00' + bench.hn(h2, 24, 2592000) * interval '1 second' AS updated_at
  FROM k
"#,
        overrides = s.overrides
    )
}

/// Target/patch pairs for scenario 6: the raw payloads of the first base rows, and patches
/// that set nested members, replace arrays and remove members (JSON null) at two depths.
pub fn merge_pairs_sql(pairs: u64) -> String {
    format!(
        r#"
CREATE TABLE bench.merge_pairs AS
SELECT p.i AS id,
       p.raw_payload AS target,
       jsonb_build_object(
           'profile', jsonb_build_object('headline', 'Patched ' || md5('m' || p.i), 'connections', NULL),
           'scores', jsonb_build_object('fit', bench.hn(md5('m' || p.i), 1, 100),
                                        'extra', jsonb_build_object('a', 1, 'b', jsonb_build_array(1, 2, 3))),
           'tags', jsonb_build_array('vip', 'patched'),
           'provider', NULL,
           'crm', jsonb_build_object('owner', 'bench', 'stage', 'won'))
       || CASE WHEN bench.hn(md5('m' || p.i), 9, 4) = 0 THEN jsonb_build_object('experience', NULL)
               ELSE '{{}}'::jsonb END AS patch
  FROM bench.people_src AS p
 WHERE p.i <= {pairs}
"#
    )
}

pub const BASE_COLUMNS: &str =
    "identity_key, identity_payload, raw_payload, status, source, fetched_at, updated_at";
