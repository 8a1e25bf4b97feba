<?php
// PHP PDO (Debian 12: php-cli, php-pgsql) against a workspace with PDO's defaults (errors as
// exceptions, server-side prepared statements): the DSN is "pgsql:" and the revealed libpq
// keyword string as it is. `migrate` creates a table unqualified (it lands in tenant_custom)
// and adds a column, both idempotent; `app` reads the seed's query 200 times over 4
// connections (taken in turn: PHP runs one request at a time) and does the seed's upsert
// with jsonb parameters. Prints one JSON line.
//
// Env: DB_KEYWORDS (override login), READ_DB_KEYWORDS (read login), DL_READ_QUERY and
// DL_UPSERT (the seed's SQL), DL_KEY (the key the upsert writes).

// recipe: PHP PDO
// "pgsql:" followed by the revealed keywords string, unchanged: PDO hands it to libpq
// (sslmode=verify-full and sslrootcert included). jsonb parameters as json_encode() text.
function connect_workspace(string $keywords): PDO
{
    return new PDO("pgsql:" . $keywords);
}

function correct_person(PDO $db, string $upsert, string $key, string $name): void
{
    // The seed's upsert, with PDO's `?` for PostgreSQL's `$1..$4`.
    $stmt = $db->prepare(preg_replace('/\$\d+/', '?', $upsert));
    $stmt->execute([$key, 'verified', json_encode(['display_name' => $name]), json_encode(['source' => 'app'])]);
}
// end recipe

// `person:N` -> `Name N`, `person:<tool>` -> `Written by <tool>`.
function right(string $key, ?string $name): bool
{
    if (preg_match('/^person:(\d+)$/', $key, $m)) {
        return $name === "Name {$m[1]}";
    }
    return $name === 'Written by ' . substr($key, strlen('person:'));
}

$mode = $argv[1];
if ($mode === 'migrate') {
    $db = connect_workspace(getenv('DB_KEYWORDS'));
    // recipe: PHP PDO migration
    // Tables created unqualified land in tenant_custom (the override login's schema).
    $db->exec('CREATE TABLE IF NOT EXISTS pdo_gadgets (id bigserial PRIMARY KEY, name text NOT NULL)');
    $db->exec('ALTER TABLE pdo_gadgets ADD COLUMN IF NOT EXISTS color text');
    // end recipe
    $schema = $db->query('SELECT current_schema()')->fetchColumn();
    echo json_encode(['tool' => 'pdo', 'mode' => 'migrate', 'current_schema' => $schema]), "\n";
    exit(0);
}

if ($mode === 'connect') {
    // Only connects (the test points sslrootcert at another CA: this must be refused).
    try {
        connect_workspace(getenv('DB_KEYWORDS'))->query('SELECT 1');
        echo json_encode(['tool' => 'pdo', 'mode' => 'connect', 'connected' => true]), "\n";
    } catch (PDOException $e) {
        echo json_encode(['tool' => 'pdo', 'mode' => 'connect', 'connected' => false, 'error' => $e->getMessage()]), "\n";
    }
    exit(0);
}

$readQuery = getenv('DL_READ_QUERY');
$conns = [];
$errors = [];
$queries = 0;
$wrong = 0;
try {
    for ($i = 0; $i < 4; $i++) {
        $c = connect_workspace(getenv('READ_DB_KEYWORDS'));
        $conns[] = [$c, $c->prepare($readQuery)];
    }
} catch (PDOException $e) {
    $errors[] = $e->getMessage();
}
for ($i = 0; $i < 200 && count($conns) === 4; $i++) {
    [$c, $stmt] = $conns[$i % 4];
    $queries++;
    try {
        $stmt->execute();
        $rows = $stmt->fetchAll(PDO::FETCH_NUM);
        if (count($rows) !== 20) {
            $wrong++;
            continue;
        }
        foreach ($rows as [$k, $name]) {
            if (!right($k, $name)) {
                $wrong++;
            }
        }
    } catch (PDOException $e) {
        $errors[] = $e->getMessage();
    }
}

$key = getenv('DL_KEY');
$out = ['tool' => 'pdo', 'mode' => 'app', 'queries' => $queries, 'errors' => count($errors),
    'first_error' => $errors[0] ?? null, 'wrong' => $wrong, 'connections' => count($conns),
    // PDO's default for pgsql: server-side prepared statements.
    'prepared_statements' => $conns ? !$conns[0][0]->getAttribute(PDO::ATTR_EMULATE_PREPARES) : null];
try {
    $w = connect_workspace(getenv('DB_KEYWORDS'));
    correct_person($w, getenv('DL_UPSERT'), $key, 'Written by draft');
    correct_person($w, getenv('DL_UPSERT'), $key, 'Written by ' . substr($key, strlen('person:')));
    $r = connect_workspace(getenv('READ_DB_KEYWORDS'));
    $stmt = $r->prepare('SELECT display_name, identity_payload, status FROM dl_resolved.people WHERE identity_key = ?');
    $stmt->execute([$key]);
    $row = $stmt->fetch(PDO::FETCH_NUM);
    $out['resolved_name'] = $row[0] ?? null;
    $out['resolved_payload_name'] = $row ? (json_decode($row[1], true)['display_name'] ?? null) : null;
    $out['resolved_status'] = $row[2] ?? null;
} catch (PDOException $e) {
    $out['upsert_error'] = $e->getMessage();
}
echo json_encode($out), "\n";
