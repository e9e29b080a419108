//! What the caches send to other processes through Redis, and how a receiver judges it. Every
//! entry that travels carries the [`Label`] (namespace and tenant) it was stored under; a
//! receiver applies only what is labelled with its own label and never re-labels anything.
//!
//! Two forms travel: an exact cache's L2 value ([`seal`] / [`open`]: `LSE1`, the framed label,
//! then the codec's bytes) and a semantic cache's stream event ([`SharedEvent`]: a field map
//! with the label in `n` and `t`, an entry's expiry in `x` so a TTL holds in every process).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store::IndexEvent;

/// The namespace and tenant an entry was stored under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Label {
    pub namespace: String,
    pub tenant: Option<String>,
}

impl Label {
    pub fn new(namespace: &str, tenant: Option<&str>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            tenant: tenant.map(str::to_owned),
        }
    }

    /// May an entry labelled `self` be served by a receiver labelled `receiver`? Only when both
    /// namespace and tenant are the same: nothing crosses, nothing is re-labelled.
    pub fn is_for(&self, receiver: &Label) -> bool {
        self == receiver
    }
}

/// A value or event that cannot be read (garbage, another format, a field missing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable shared cache entry: {0}")]
pub struct Unreadable(pub String);

fn unreadable(what: impl Into<String>) -> Unreadable {
    Unreadable(what.into())
}

// -- time stamps -----------------------------------------------------------------------------

/// Milliseconds since the Unix epoch (wall clock: expiries are compared across machines).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The expiry stamp of an entry stored now with this TTL; 0 means never.
pub fn expiry_after(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        now_ms().saturating_add(ms)
    })
}

/// Has an entry with this stamp expired at `now`?
pub fn expired(expires_ms: u64, now: u64) -> bool {
    expires_ms != 0 && expires_ms <= now
}

// -- exact cache L2 values -------------------------------------------------------------------

const SEALED: &[u8; 4] = b"LSE1";

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len as usize]);
}

pub(crate) fn take_str<'a>(bytes: &mut &'a [u8], what: &str) -> Result<&'a str, Unreadable> {
    let (len, rest) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| unreadable(format!("{what}: truncated")))?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(unreadable(format!("{what}: truncated")));
    }
    let (text, rest) = rest.split_at(len);
    *bytes = rest;
    std::str::from_utf8(text).map_err(|_| unreadable(format!("{what}: not UTF-8")))
}

/// An exact cache's value as stored in Redis: its label, then `payload`.
pub fn seal(label: &Label, payload: &[u8]) -> Vec<u8> {
    let tenant = label.tenant.as_deref().unwrap_or("");
    let mut out = Vec::with_capacity(13 + label.namespace.len() + tenant.len() + payload.len());
    out.extend_from_slice(SEALED);
    put_str(&mut out, &label.namespace);
    out.push(u8::from(label.tenant.is_some()));
    put_str(&mut out, tenant);
    out.extend_from_slice(payload);
    out
}

/// The label and payload of a value [`seal`] wrote.
pub fn open(bytes: &[u8]) -> Result<(Label, &[u8]), Unreadable> {
    let mut rest = bytes
        .strip_prefix(SEALED)
        .ok_or_else(|| unreadable("not a langscale cache value"))?;
    let namespace = take_str(&mut rest, "namespace")?.to_owned();
    let (&has_tenant, after) = rest
        .split_first()
        .ok_or_else(|| unreadable("tenant: truncated"))?;
    rest = after;
    let tenant = take_str(&mut rest, "tenant")?;
    let tenant = match has_tenant {
        0 if tenant.is_empty() => None,
        1 => Some(tenant.to_owned()),
        _ => return Err(unreadable("tenant: bad flag")),
    };
    Ok((Label { namespace, tenant }, rest))
}

// -- semantic cache stream events ------------------------------------------------------------

/// One entry as replicated: stored under `label` for `(prompt, llm_string)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEntry {
    pub label: Label,
    pub prompt: String,
    pub llm_string: String,
    /// The codec's bytes.
    pub value: Vec<u8>,
    /// Wall-clock expiry in ms since the epoch; 0 never.
    pub expires_ms: u64,
    /// The embedding it was indexed under, when the sender had one.
    pub vector: Option<Vec<f32>>,
}

/// An event of the semantic cache's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedEvent {
    Entry(SharedEntry),
    /// Everything stored under this label goes.
    Clear(Label),
}

// Kinds of this format. Senders of the earlier, unlabelled format used "add" and "clear":
// those events are unreadable here, and these are unknown (ignored) there, so versions mixed
// during an upgrade never cross namespaces either.
const ENTRY: &[u8] = b"entry";
const CLEAR: &[u8] = b"clear-label";

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_slice())
}

fn text_field(fields: &[(String, Vec<u8>)], name: &str) -> Result<String, Unreadable> {
    let bytes = field(fields, name).ok_or_else(|| unreadable(format!("field {name} missing")))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| unreadable(format!("field {name}: not UTF-8")))
}

fn label_fields(label: &Label, out: &mut IndexEvent) {
    out.push(("n".into(), label.namespace.as_bytes().to_vec()));
    if let Some(tenant) = &label.tenant {
        out.push(("t".into(), tenant.as_bytes().to_vec()));
    }
}

fn label_of(fields: &[(String, Vec<u8>)]) -> Result<Label, Unreadable> {
    let namespace = text_field(fields, "n")?;
    let tenant = field(fields, "t")
        .map(|_| text_field(fields, "t"))
        .transpose()?;
    Ok(Label { namespace, tenant })
}

impl SharedEvent {
    pub fn label(&self) -> &Label {
        match self {
            Self::Entry(entry) => &entry.label,
            Self::Clear(label) => label,
        }
    }

    /// The stream fields of this event.
    pub fn to_fields(&self) -> IndexEvent {
        let mut out = IndexEvent::with_capacity(8);
        match self {
            Self::Clear(label) => {
                out.push(("k".into(), CLEAR.to_vec()));
                label_fields(label, &mut out);
            }
            Self::Entry(entry) => {
                out.push(("k".into(), ENTRY.to_vec()));
                label_fields(&entry.label, &mut out);
                out.push(("p".into(), entry.prompt.as_bytes().to_vec()));
                out.push(("l".into(), entry.llm_string.as_bytes().to_vec()));
                out.push(("v".into(), entry.value.clone()));
                out.push(("x".into(), entry.expires_ms.to_be_bytes().to_vec()));
                let vector = entry.vector.as_deref().unwrap_or_default();
                out.push((
                    "e".into(),
                    vector.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ));
            }
        }
        out
    }

    /// Read an event from its stream fields.
    pub fn from_fields(fields: &[(String, Vec<u8>)]) -> Result<Self, Unreadable> {
        let kind = field(fields, "k").ok_or_else(|| unreadable("field k missing"))?;
        if kind == CLEAR {
            return Ok(Self::Clear(label_of(fields)?));
        }
        if kind != ENTRY {
            return Err(unreadable(format!(
                "unknown kind {:?}",
                String::from_utf8_lossy(kind)
            )));
        }
        let label = label_of(fields)?;
        let expires = field(fields, "x")
            .and_then(|x| <[u8; 8]>::try_from(x).ok())
            .ok_or_else(|| unreadable("field x missing or not 8 bytes"))?;
        let vector = match field(fields, "e").unwrap_or_default() {
            [] => None,
            bytes if bytes.len() % 4 == 0 => Some(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => return Err(unreadable("field e: not a whole number of f32")),
        };
        Ok(Self::Entry(SharedEntry {
            label,
            prompt: text_field(fields, "p")?,
            llm_string: text_field(fields, "l")?,
            value: field(fields, "v")
                .ok_or_else(|| unreadable("field v missing"))?
                .to_vec(),
            expires_ms: u64::from_be_bytes(expires),
            vector,
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn label() -> impl Strategy<Value = Label> {
        (".{0,40}", proptest::option::of(".{0,40}"))
            .prop_map(|(namespace, tenant)| Label { namespace, tenant })
    }

    proptest! {
        #[test]
        fn sealed_values_open_with_their_own_label(l in label(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let sealed = seal(&l, &payload);
            let (got, rest) = open(&sealed).unwrap();
            prop_assert_eq!(&got, &l);
            prop_assert_eq!(rest, payload.as_slice());
        }

        #[test]
        fn labels_never_cross(a in label(), b in label()) {
            prop_assert_eq!(a.is_for(&b), a == b);
            prop_assert_eq!(a.is_for(&b), b.is_for(&a));
            let (got, _) = open(&seal(&a, b"x")).unwrap();
            prop_assert_eq!(got.is_for(&b), a == b);
        }

        #[test]
        fn events_round_trip(l in label(), prompt in ".{0,30}", llm in ".{0,30}", value in proptest::collection::vec(any::<u8>(), 0..32), expires in any::<u64>(), vector in proptest::option::of(proptest::collection::vec(-1.0f32..1.0, 1..8))) {
            let event = SharedEvent::Entry(SharedEntry { label: l.clone(), prompt, llm_string: llm, value, expires_ms: expires, vector });
            prop_assert_eq!(SharedEvent::from_fields(&event.to_fields()).unwrap(), event);
            let clear = SharedEvent::Clear(l);
            prop_assert_eq!(SharedEvent::from_fields(&clear.to_fields()).unwrap(), clear);
        }

        #[test]
        fn garbage_never_opens_as_a_value_nor_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if !bytes.starts_with(SEALED) {
                prop_assert!(open(&bytes).is_err());
            } else {
                let _ = open(&bytes);
            }
        }
    }

    #[test]
    fn no_tenant_and_an_empty_tenant_differ() {
        let none = Label::new("a", None);
        let empty = Label::new("a", Some(""));
        assert!(!none.is_for(&empty));
        assert_eq!(open(&seal(&empty, b"")).unwrap().0, empty);
        assert_eq!(open(&seal(&none, b"")).unwrap().0, none);
    }

    #[test]
    fn unlabelled_and_foreign_values_are_unreadable() {
        for bytes in [
            &b""[..],
            b"LSX1\0\0\0\0\0\0\0\0{}",
            b"{\"v\":1}",
            b"LSE1\0\0\0\x05ab",
            b"LSE1\0\0\0\0\x07\0\0\0\0",
        ] {
            assert!(open(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn events_of_the_unlabelled_format_are_refused() {
        let old: IndexEvent = vec![
            ("k".into(), b"add".to_vec()),
            ("p".into(), b"q".to_vec()),
            ("l".into(), b"m".to_vec()),
            ("v".into(), b"x".to_vec()),
        ];
        assert!(SharedEvent::from_fields(&old).is_err());
        let clear: IndexEvent = vec![("k".into(), b"clear".to_vec())];
        assert!(SharedEvent::from_fields(&clear).is_err());
        let unlabelled: IndexEvent = vec![("k".into(), CLEAR.to_vec())];
        assert!(SharedEvent::from_fields(&unlabelled).is_err());
    }

    #[test]
    fn expiry_stamps() {
        assert_eq!(expiry_after(None), 0);
        assert!(!expired(0, u64::MAX));
        let stamp = expiry_after(Some(Duration::from_secs(60)));
        assert!(!expired(stamp, now_ms()));
        assert!(expired(stamp, stamp));
    }
}
