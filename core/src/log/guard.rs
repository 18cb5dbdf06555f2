//! The storage boundary. redb panics on some damaged files (a slice index out of range in its
//! allocator bitmaps, an `unreachable!` in its B-tree code, assertions when a handle is dropped),
//! and a panic that escapes turns "this file is damaged" into exit code 101 and a backtrace. Every
//! call into redb that touches file contents goes through [`contain`], which turns a panic into
//! [`LogError::Corrupt`] naming the file (and the seq, where one is involved).
//!
//! The default panic hook would still print `thread ... panicked` for a panic that is then
//! contained. [`install_panic_hook`] (called once by the binary's `main`) chains a hook that stays
//! quiet while the current thread is inside [`contain`] (a thread-local depth counter) and keeps
//! the panic's message and location for the error instead; every other panic is reported by the
//! previous hook exactly as before.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

use super::LogError;

thread_local! {
    /// How many [`contain`] calls the current thread is inside.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last contained panic of this thread was raised (set by the hook).
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Whether the current thread is inside the storage boundary.
pub fn in_storage_boundary() -> bool {
    DEPTH.try_with(|d| d.get() > 0).unwrap_or(false)
}

/// Installs (once per process) a panic hook that is silent for panics raised inside the storage
/// boundary, and calls the previously installed hook for every other panic.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if in_storage_boundary() {
                // The last components of the path are enough to find it (`redb-4.4.0/src/...`).
                let at = info.location().map(|l| {
                    let parts: Vec<&str> = l.file().rsplit('/').take(4).collect();
                    let short: Vec<&str> = parts.into_iter().rev().collect();
                    format!("{}:{}", short.join("/"), l.line())
                });
                let _ = LOCATION.try_with(|slot| *slot.borrow_mut() = at);
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "no message"
    }
}

/// Runs `f` (a call into redb on the file at `path`); a panic becomes [`LogError::Corrupt`].
/// `seq` is the record being read, when there is one, for the message.
pub(crate) fn contain<T>(
    path: &Path,
    seq: Option<u64>,
    f: impl FnOnce() -> Result<T, LogError>,
) -> Result<T, LogError> {
    let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
    let result = catch_unwind(AssertUnwindSafe(f));
    let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    result.unwrap_or_else(|payload| {
        let at = LOCATION
            .try_with(|slot| slot.borrow_mut().take())
            .ok()
            .flatten()
            .map(|l| format!(" at {l}"))
            .unwrap_or_default();
        let record = seq.map(|s| format!(" record {s}:")).unwrap_or_default();
        Err(LogError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "the storage engine (redb) failed on damaged data:{record} {}{at}",
                panic_message(payload.as_ref())
            ),
        })
    })
}

/// Drops `value` inside the boundary: closing a redb handle on a damaged file can panic too.
pub(crate) fn drop_contained<T>(path: &Path, value: T) {
    let _ = contain(path, None, || {
        drop(value);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_panic_inside_becomes_a_corrupt_error_naming_the_file_and_seq() {
        install_panic_hook();
        let r: Result<(), LogError> =
            contain(Path::new("/x/omniroute.redb"), Some(7), || panic!("boom"));
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("/x/omniroute.redb"), "{msg}");
        assert!(msg.contains("record 7") && msg.contains("boom"), "{msg}");
        assert!(
            msg.contains("guard.rs"),
            "the hook keeps the location: {msg}"
        );
        assert!(!in_storage_boundary());
    }

    #[test]
    fn nested_boundaries_unwind_to_the_innermost() {
        let r = contain(Path::new("a"), None, || {
            let inner: Result<u8, LogError> = contain(Path::new("b"), None, || panic!("inner"));
            assert!(in_storage_boundary());
            Ok(inner.is_err())
        });
        assert!(r.unwrap());
        assert!(!in_storage_boundary());
    }
}
