//! SaltedPasswords of SCRAM logins to backends, derived once.
//!
//! A SCRAM login's costly step is PBKDF2 over the password with the salt
//! and iteration count the server sends (4096 HMAC-SHA-256 rounds by
//! default): some 110 million instructions, tens of milliseconds of CPU.
//! pgshift logs into a backend for every client session (twice when it
//! mirrors), and a backend role's salt and count only change with its
//! password, so the result is kept by password, salt and count.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use pgshift_protocol::auth::scram;

/// Distinct (password, salt, count) triples kept; past this the cache
/// starts over. A handful is normal: one per backend role in use.
const MAX_ENTRIES: usize = 64;

type Key = (Vec<u8>, Vec<u8>, u32);

static SALTED: LazyLock<Mutex<HashMap<Key, [u8; 32]>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// `scram::salted_password(password, salt, iterations)`, from the cache
/// when an earlier login derived it.
pub fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let key = (password.to_vec(), salt.to_vec(), iterations);
    if let Some(k) = lock().get(&key) {
        return *k;
    }
    // Derived unlocked: other logins need not wait for this one.
    let salted = scram::salted_password(password, salt, iterations);
    let mut map = lock();
    if map.len() >= MAX_ENTRIES {
        map.clear();
    }
    map.insert(key, salted);
    salted
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<Key, [u8; 32]>> {
    // Nothing panics while holding it; a poisoned map is still a cache.
    SALTED.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_it_derived_and_keys_by_all_three() {
        let a = salted_password(b"pw-salted-test", b"salt-1", 16);
        assert_eq!(a, scram::salted_password(b"pw-salted-test", b"salt-1", 16));
        assert!(lock().contains_key(&(b"pw-salted-test".to_vec(), b"salt-1".to_vec(), 16)));
        assert_eq!(salted_password(b"pw-salted-test", b"salt-1", 16), a);
        assert_ne!(salted_password(b"pw-salted-test", b"salt-2", 16), a);
        assert_ne!(salted_password(b"pw-salted-test", b"salt-1", 17), a);
        assert_ne!(salted_password(b"other", b"salt-1", 16), a);
    }
}
