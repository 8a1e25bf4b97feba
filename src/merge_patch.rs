//! RFC 7396 JSON Merge Patch over PostgreSQL's own jsonb representation.
//!
//! Every resolved row goes through this function, so it never converts to text or to
//! serde values: it walks both documents with PostgreSQL's jsonb iterators and builds the
//! result with `pushJsonbValue`, the same machinery `jsonb || jsonb` uses. Object keys in a
//! jsonb container are sorted (shorter first, then bytewise), so target and patch are merged
//! in one pass like a merge join, and untouched subtrees are copied without being decoded.

use pgrx::pg_sys;
use std::cmp::Ordering;
use std::ptr;

// Container header flags from PostgreSQL's utils/jsonb.h.
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_CMASK: u32 = 0x0FFF_FFFF;

/// `dl_jsonb_merge_patch(target jsonb, patch jsonb) returns jsonb`
///
/// Not STRICT on purpose: a SQL NULL patch returns the target unchanged, and a SQL NULL
/// target counts as "not an object", which RFC 7396 replaces with `{}` before patching.
#[no_mangle]
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn dl_jsonb_merge_patch(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let target_is_null = pgrx::fcinfo::pg_arg_is_null(fcinfo, 0);
    let patch_is_null = pgrx::fcinfo::pg_arg_is_null(fcinfo, 1);
    if patch_is_null {
        // No patch: the target as it is (still undecoded, so this costs nothing).
        return if target_is_null {
            pgrx::fcinfo::pg_return_null(fcinfo)
        } else {
            pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0)
        };
    }
    let patch = detoast_jsonb(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 1));
    let patch_root = root(patch);
    if !is_object(patch_root) {
        // A non-object patch replaces the target whole.
        return pg_sys::Datum::from(patch);
    }
    let target_root = if target_is_null {
        None
    } else {
        let target = detoast_jsonb(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0));
        let target_root = root(target);
        if is_object(target_root) && pair_count(patch_root) == 0 {
            // `{}` patches nothing.
            return pg_sys::Datum::from(target);
        }
        is_object(target_root).then_some(target_root)
    };

    let mut state: *mut pg_sys::JsonbParseState = ptr::null_mut();
    merge_object(&mut state, target_root, patch_root);
    let merged = pg_sys::pushJsonbValue(
        &mut state,
        pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
        ptr::null_mut(),
    );
    pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(merged))
}

crate::v1_call_info!(pg_finfo_dl_jsonb_merge_patch);

pub(crate) unsafe fn detoast_jsonb(datum: pg_sys::Datum) -> *mut pg_sys::Jsonb {
    pg_sys::pg_detoast_datum(datum.cast_mut_ptr::<pg_sys::varlena>()).cast()
}

pub(crate) unsafe fn root(jsonb: *mut pg_sys::Jsonb) -> *mut pg_sys::JsonbContainer {
    ptr::addr_of_mut!((*jsonb).root)
}

pub(crate) unsafe fn is_object(container: *const pg_sys::JsonbContainer) -> bool {
    (*container).header & JB_FOBJECT != 0
}

unsafe fn pair_count(container: *const pg_sys::JsonbContainer) -> u32 {
    (*container).header & JB_CMASK
}

/// The nested container behind a value, when that value is a JSON object.
unsafe fn as_object(value: &pg_sys::JsonbValue) -> Option<*mut pg_sys::JsonbContainer> {
    if value.type_ == pg_sys::jbvType::jbvBinary && is_object(value.val.binary.data) {
        Some(value.val.binary.data)
    } else {
        None
    }
}

/// One object's (key, value) pairs in stored order; nested containers are not descended into.
pub(crate) struct Pairs {
    iterator: *mut pg_sys::JsonbIterator,
}

impl Pairs {
    pub(crate) unsafe fn new(container: *mut pg_sys::JsonbContainer) -> Self {
        let mut iterator = pg_sys::JsonbIteratorInit(container);
        let mut skipped = zeroed_value();
        // The first token is WJB_BEGIN_OBJECT.
        pg_sys::JsonbIteratorNext(&mut iterator, &mut skipped, true);
        Pairs { iterator }
    }

    pub(crate) unsafe fn next(&mut self) -> Option<(pg_sys::JsonbValue, pg_sys::JsonbValue)> {
        let mut key = zeroed_value();
        if pg_sys::JsonbIteratorNext(&mut self.iterator, &mut key, true)
            != pg_sys::JsonbIteratorToken::WJB_KEY
        {
            return None;
        }
        let mut value = zeroed_value();
        pg_sys::JsonbIteratorNext(&mut self.iterator, &mut value, true);
        Some((key, value))
    }
}

fn zeroed_value() -> pg_sys::JsonbValue {
    // SAFETY: JsonbValue is a plain C struct; all-zero is jbvNull with no payload.
    unsafe { std::mem::zeroed() }
}

/// jsonb's key order (lengthCompareJsonbStringValue): shorter keys first, then bytewise.
unsafe fn key_order(a: &pg_sys::JsonbValue, b: &pg_sys::JsonbValue) -> Ordering {
    let (a_len, b_len) = (a.val.string.len as usize, b.val.string.len as usize);
    a_len.cmp(&b_len).then_with(|| {
        let a_bytes = std::slice::from_raw_parts(a.val.string.val.cast::<u8>(), a_len);
        let b_bytes = std::slice::from_raw_parts(b.val.string.val.cast::<u8>(), b_len);
        a_bytes.cmp(b_bytes)
    })
}

/// Pushes `{` and the merged pairs of `target` (None: `{}`) and `patch`; the caller pushes `}`.
unsafe fn merge_object(
    state: &mut *mut pg_sys::JsonbParseState,
    target: Option<*mut pg_sys::JsonbContainer>,
    patch: *mut pg_sys::JsonbContainer,
) {
    // One level per nested patch object: jsonb input accepts nesting deep enough to overflow
    // the backend's stack here, so refuse it the way PostgreSQL's own recursive code does
    // (54001 stack depth limit exceeded) instead of crashing the whole cluster.
    pg_sys::check_stack_depth();
    pg_sys::pushJsonbValue(
        state,
        pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
        ptr::null_mut(),
    );
    let mut target_pairs = target.map(|t| Pairs::new(t));
    let mut patch_pairs = Pairs::new(patch);
    let mut next_target = target_pairs.as_mut().and_then(|p| p.next());
    let mut next_patch = patch_pairs.next();
    loop {
        let order = match (&next_target, &next_patch) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((t, _)), Some((p, _))) => key_order(t, p),
        };
        match order {
            Ordering::Less => {
                // Only in the target: kept as it is.
                let (mut key, mut value) = next_target.take().unwrap();
                push_pair(state, &mut key, &mut value);
                next_target = target_pairs.as_mut().and_then(|p| p.next());
            }
            Ordering::Greater => {
                let (mut key, mut value) = next_patch.take().unwrap();
                apply_patch_value(state, &mut key, None, &mut value);
                next_patch = patch_pairs.next();
            }
            Ordering::Equal => {
                let (_, target_value) = next_target.take().unwrap();
                let (mut key, mut value) = next_patch.take().unwrap();
                apply_patch_value(state, &mut key, as_object(&target_value), &mut value);
                next_target = target_pairs.as_mut().and_then(|p| p.next());
                next_patch = patch_pairs.next();
            }
        }
    }
}

/// One patch member: null removes the key, an object merges recursively, anything else replaces.
unsafe fn apply_patch_value(
    state: &mut *mut pg_sys::JsonbParseState,
    key: &mut pg_sys::JsonbValue,
    target_object: Option<*mut pg_sys::JsonbContainer>,
    value: &mut pg_sys::JsonbValue,
) {
    if value.type_ == pg_sys::jbvType::jbvNull {
        return;
    }
    match as_object(value) {
        Some(patch_object) => {
            pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_KEY, key);
            merge_object(state, target_object, patch_object);
            pg_sys::pushJsonbValue(
                state,
                pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
                ptr::null_mut(),
            );
        }
        None => push_pair(state, key, value),
    }
}

unsafe fn push_pair(
    state: &mut *mut pg_sys::JsonbParseState,
    key: &mut pg_sys::JsonbValue,
    value: &mut pg_sys::JsonbValue,
) {
    pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_KEY, key);
    // A jbvBinary value (nested array or object) is unpacked by pushJsonbValue itself.
    pg_sys::pushJsonbValue(state, pg_sys::JsonbIteratorToken::WJB_VALUE, value);
}

/// A plain serde_json implementation of RFC 7396 section 2, the reference the tests
/// compare the jsonb implementation against.
#[cfg(feature = "pg_test")]
pub mod reference {
    use serde_json::{Map, Value};

    pub fn merge_patch(target: &Value, patch: &Value) -> Value {
        let Value::Object(patch) = patch else {
            return patch.clone();
        };
        let mut result = match target {
            Value::Object(target) => target.clone(),
            _ => Map::new(),
        };
        for (key, value) in patch {
            if value.is_null() {
                result.remove(key);
            } else {
                let merged = merge_patch(result.get(key).unwrap_or(&Value::Null), value);
                result.insert(key.clone(), merged);
            }
        }
        Value::Object(result)
    }
}
