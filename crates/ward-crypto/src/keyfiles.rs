//! The local key-file provider: a directory (mode 0700) holding `kek.key` (the KEK, base64 of
//! 32 random bytes), `jwt-es256.p8` (the ES256 signing key, PKCS#8 DER) and
//! `audit-ed25519.p8` (the Ed25519 audit checkpoint key, PKCS#8 DER) and `audit-mac.key` (the
//! audit record MAC key, base64 of 32 random bytes), all mode 0600.
//! Loading refuses a directory or file that group or others can access.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::{AuditKey, AuditMacKey, Error, Kek, Result, RsaSigningKey, SigningKey};

pub const KEK_FILE: &str = "kek.key";
pub const SIGNING_KEY_FILE: &str = "jwt-es256.p8";
/// Keys added by `ward keys rotate-signing`: `jwt-es256-NNNN.p8`, numbered from 0001; the
/// highest number signs, the others (and `jwt-es256.p8`) only verify.
const ROTATED_PREFIX: &str = "jwt-es256-";
const ROTATED_SUFFIX: &str = ".p8";
/// The RS256 key that signs OpenID Connect id_tokens (PKCS#8 DER).
pub const ID_TOKEN_KEY_FILE: &str = "jwt-rs256.p8";
pub const AUDIT_KEY_FILE: &str = "audit-ed25519.p8";
pub const AUDIT_MAC_KEY_FILE: &str = "audit-mac.key";
const DIR_LABEL: &str = "key directory";

/// Creates `keys_dir` (mode 0700) with a new KEK, a new ES256 signing key, a new Ed25519
/// audit key and a new audit MAC key (files mode 0600, created exclusively with their mode set at open time). Refuses to
/// overwrite any of them.
pub fn create_key_dir(keys_dir: &Path) -> Result<()> {
    match fs::symlink_metadata(keys_dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(Error::Io {
                    name: DIR_LABEL.into(),
                    kind: std::io::ErrorKind::NotADirectory,
                });
            }
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(Error::InsecurePermissions {
                    name: DIR_LABEL.into(),
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(keys_dir)
                .map_err(|e| Error::io(DIR_LABEL, &e))?;
        }
        Err(e) => return Err(Error::io(DIR_LABEL, &e)),
    }
    for name in [
        KEK_FILE,
        SIGNING_KEY_FILE,
        ID_TOKEN_KEY_FILE,
        AUDIT_KEY_FILE,
        AUDIT_MAC_KEY_FILE,
    ] {
        if fs::symlink_metadata(keys_dir.join(name)).is_ok() {
            return Err(Error::AlreadyExists { name: name.into() });
        }
    }

    write_random_key(keys_dir, KEK_FILE, Kek::LEN)?;

    let signing = SigningKey::generate()?;
    write_new(keys_dir, SIGNING_KEY_FILE, signing.pkcs8_der())?;
    let id_token = RsaSigningKey::generate()?;
    write_new(keys_dir, ID_TOKEN_KEY_FILE, id_token.pkcs8_der())?;

    let audit = AuditKey::generate()?;
    write_new(keys_dir, AUDIT_KEY_FILE, audit.pkcs8_der())?;
    write_random_key(keys_dir, AUDIT_MAC_KEY_FILE, AuditMacKey::LEN)?;

    if let Ok(dir) = fs::File::open(keys_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Creates `audit-ed25519.p8` (mode 0600) in an existing key directory if it is missing (for key
/// directories made before the audit key existed). Returns whether a key was created. Checks the
/// directory's permissions first.
pub fn ensure_audit_key(keys_dir: &Path) -> Result<bool> {
    check_permissions(keys_dir)?;
    if fs::symlink_metadata(keys_dir.join(AUDIT_KEY_FILE)).is_ok() {
        return Ok(false);
    }
    let audit = AuditKey::generate()?;
    write_new(keys_dir, AUDIT_KEY_FILE, audit.pkcs8_der())?;
    if let Ok(dir) = fs::File::open(keys_dir) {
        let _ = dir.sync_all();
    }
    Ok(true)
}

/// Creates `audit-mac.key` (mode 0600) in an existing key directory if it is missing. Returns
/// whether a key was created. Only for a deployment whose audit trail holds no record yet:
/// records written before the key existed can never verify (see `ward-audit`).
pub fn ensure_audit_mac_key(keys_dir: &Path) -> Result<bool> {
    check_permissions(keys_dir)?;
    if fs::symlink_metadata(keys_dir.join(AUDIT_MAC_KEY_FILE)).is_ok() {
        return Ok(false);
    }
    write_random_key(keys_dir, AUDIT_MAC_KEY_FILE, AuditMacKey::LEN)?;
    if let Ok(dir) = fs::File::open(keys_dir) {
        let _ = dir.sync_all();
    }
    Ok(true)
}

/// Creates `jwt-rs256.p8` (mode 0600) in an existing key directory if it is missing (for key
/// directories made before id_tokens existed). Returns whether a key was created.
pub fn ensure_id_token_key(keys_dir: &Path) -> Result<bool> {
    check_permissions(keys_dir)?;
    if fs::symlink_metadata(keys_dir.join(ID_TOKEN_KEY_FILE)).is_ok() {
        return Ok(false);
    }
    let key = RsaSigningKey::generate()?;
    write_new(keys_dir, ID_TOKEN_KEY_FILE, key.pkcs8_der())?;
    sync_dir(keys_dir);
    Ok(true)
}

/// Adds a new ES256 signing key (`jwt-es256-NNNN.p8`, mode 0600, the next number): new tokens
/// are signed with it, the older keys keep verifying. Returns the new key.
pub fn rotate_signing_key(keys_dir: &Path) -> Result<SigningKey> {
    check_permissions(keys_dir)?;
    let next = rotated_numbers(keys_dir)?
        .last()
        .map_or(1, |n| n.saturating_add(1));
    if next > 9999 {
        return Err(Error::Malformed("too many rotated signing keys"));
    }
    let key = SigningKey::generate()?;
    write_new(keys_dir, &rotated_name(next), key.pkcs8_der())?;
    sync_dir(keys_dir);
    Ok(key)
}

fn rotated_name(n: u32) -> String {
    format!("{ROTATED_PREFIX}{n:04}{ROTATED_SUFFIX}")
}

/// The numbers of the rotated signing keys present, ascending.
fn rotated_numbers(keys_dir: &Path) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(keys_dir).map_err(|e| Error::io(DIR_LABEL, &e))? {
        let entry = entry.map_err(|e| Error::io(DIR_LABEL, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix(ROTATED_PREFIX)
            .and_then(|r| r.strip_suffix(ROTATED_SUFFIX))
            .filter(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Every ES256 signing key, oldest first (`jwt-es256.p8`, then the rotated ones by number):
/// the last one signs.
pub fn load_signing_keys(keys_dir: &Path) -> Result<Vec<SigningKey>> {
    let mut keys = vec![load_signing_key(keys_dir)?];
    for n in rotated_numbers(keys_dir)? {
        let name = rotated_name(n);
        let der = read_secret(keys_dir, &name)?;
        keys.push(SigningKey::from_pkcs8_der(&der)?);
    }
    Ok(keys)
}

/// Loads the RS256 id_token key (PKCS#8 DER) after checking permissions.
pub fn load_id_token_key(keys_dir: &Path) -> Result<RsaSigningKey> {
    check_permissions(keys_dir)?;
    let der = read_secret(keys_dir, ID_TOKEN_KEY_FILE)?;
    RsaSigningKey::from_pkcs8_der(&der)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `len` random bytes as base64 text to a new file `name`.
fn write_random_key(dir: &Path, name: &str, len: usize) -> Result<()> {
    let key = Zeroizing::new(crate::random_bytes(len));
    let mut text = Zeroizing::new(STANDARD.encode(&*key));
    text.push('\n');
    write_new(dir, name, text.as_bytes())
}

fn write_new(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))
        .map_err(|e| Error::io(name, &e))?;
    f.write_all(contents).map_err(|e| Error::io(name, &e))?;
    f.sync_all().map_err(|e| Error::io(name, &e))?;
    Ok(())
}

/// `path` (followed if a link) must exist and have no group/other permission bits; `label`
/// names it in the error. Used for the key directory and, by `ward serve`, for the data
/// directory and the SQLite database files.
pub fn check_private(path: &Path, label: &str) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| Error::io(label, &e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::InsecurePermissions { name: label.into() });
    }
    Ok(())
}

/// The key directory and every entry in it must have no group/other permission bits.
/// Symbolic links (whose mode is always 0777) are refused too.
pub fn check_permissions(keys_dir: &Path) -> Result<()> {
    let meta = fs::metadata(keys_dir).map_err(|e| Error::io(DIR_LABEL, &e))?;
    if !meta.is_dir() {
        return Err(Error::Io {
            name: DIR_LABEL.into(),
            kind: std::io::ErrorKind::NotADirectory,
        });
    }
    check_private(keys_dir, DIR_LABEL)?;
    let mut names = Vec::new();
    for entry in fs::read_dir(keys_dir).map_err(|e| Error::io(DIR_LABEL, &e))? {
        let entry = entry.map_err(|e| Error::io(DIR_LABEL, &e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta = fs::symlink_metadata(entry.path()).map_err(|e| Error::io(&name, &e))?;
        if meta.file_type().is_symlink() || meta.permissions().mode() & 0o077 != 0 {
            names.push(name);
        }
    }
    names.sort();
    match names.into_iter().next() {
        Some(name) => Err(Error::InsecurePermissions { name }),
        None => Ok(()),
    }
}

fn read_secret(keys_dir: &Path, name: &str) -> Result<Zeroizing<Vec<u8>>> {
    fs::read(keys_dir.join(name))
        .map(Zeroizing::new)
        .map_err(|e| Error::io(name, &e))
}

/// Reads a 32-byte key file: raw bytes, or base64 text of them.
fn read_key32(keys_dir: &Path, name: &'static str, malformed: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let raw = read_secret(keys_dir, name)?;
    if raw.len() == 32 {
        return Ok(raw);
    }
    let text = std::str::from_utf8(&raw).map_err(|_| Error::Malformed(malformed))?;
    Ok(Zeroizing::new(
        STANDARD
            .decode(text.trim())
            .map_err(|_| Error::Malformed(malformed))?,
    ))
}

/// Loads the KEK (raw 32 bytes, or base64 text of 32 bytes) after checking permissions.
pub fn load_kek(keys_dir: &Path) -> Result<Kek> {
    check_permissions(keys_dir)?;
    Kek::from_bytes(&read_key32(keys_dir, KEK_FILE, "key file kek.key")?)
}

/// Loads the audit record MAC key (base64 of 32 bytes) after checking permissions.
pub fn load_audit_mac_key(keys_dir: &Path) -> Result<AuditMacKey> {
    check_permissions(keys_dir)?;
    AuditMacKey::from_bytes(&read_key32(
        keys_dir,
        AUDIT_MAC_KEY_FILE,
        "key file audit-mac.key",
    )?)
}

/// Loads the ES256 signing key (PKCS#8 DER) after checking permissions.
pub fn load_signing_key(keys_dir: &Path) -> Result<SigningKey> {
    check_permissions(keys_dir)?;
    let der = read_secret(keys_dir, SIGNING_KEY_FILE)?;
    SigningKey::from_pkcs8_der(&der)
}

/// Loads the Ed25519 audit checkpoint key (PKCS#8 DER) after checking permissions.
pub fn load_audit_key(keys_dir: &Path) -> Result<AuditKey> {
    check_permissions(keys_dir)?;
    let der = read_secret(keys_dir, AUDIT_KEY_FILE)?;
    AuditKey::from_pkcs8_der(&der)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn create_and_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        create_key_dir(&dir).unwrap();
        assert_eq!(fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        for f in [KEK_FILE, SIGNING_KEY_FILE, AUDIT_KEY_FILE, AUDIT_MAC_KEY_FILE] {
            assert_eq!(
                fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        check_permissions(&dir).unwrap();
        let kek = load_kek(&dir).unwrap();
        let sk = load_signing_key(&dir).unwrap();
        assert_eq!(sk.public_key_uncompressed().len(), 65);
        let ak = load_audit_key(&dir).unwrap();
        assert_eq!(ak.public_key(), load_audit_key(&dir).unwrap().public_key());
        assert_ne!(ak.pkcs8_der(), sk.pkcs8_der());
        assert!(!ensure_audit_key(&dir).unwrap());
        let mac = load_audit_mac_key(&dir).unwrap();
        assert_eq!(
            mac.tag(&[1; 32], 0),
            load_audit_mac_key(&dir).unwrap().tag(&[1; 32], 0)
        );
        assert!(!ensure_audit_mac_key(&dir).unwrap());
        fs::remove_file(dir.join(AUDIT_MAC_KEY_FILE)).unwrap();
        assert!(matches!(load_audit_mac_key(&dir), Err(Error::Io { .. })));
        assert!(ensure_audit_mac_key(&dir).unwrap());
        assert_eq!(
            fs::metadata(dir.join(AUDIT_MAC_KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        // KEK works and is stable across loads.
        let dk = crate::DataKey::generate().unwrap();
        let wrapped = kek.wrap(&dk).unwrap();
        assert_eq!(load_kek(&dir).unwrap().unwrap(&wrapped).unwrap(), dk);
    }

    #[test]
    fn refuses_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        create_key_dir(&dir).unwrap();
        let before = fs::read(dir.join(KEK_FILE)).unwrap();
        let err = create_key_dir(&dir).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(fs::read(dir.join(KEK_FILE)).unwrap(), before);
    }

    #[test]
    fn refuses_loose_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        create_key_dir(&dir).unwrap();

        chmod(&dir.join(KEK_FILE), 0o644);
        let err = load_kek(&dir).unwrap_err();
        match &err {
            Error::InsecurePermissions { name } => assert_eq!(name, KEK_FILE),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("kek.key"));
        assert!(!err.to_string().contains(tmp.path().to_str().unwrap()));
        assert!(load_signing_key(&dir).is_err());
        chmod(&dir.join(KEK_FILE), 0o600);

        chmod(&dir.join(SIGNING_KEY_FILE), 0o640);
        match load_signing_key(&dir).unwrap_err() {
            Error::InsecurePermissions { name } => assert_eq!(name, SIGNING_KEY_FILE),
            other => panic!("unexpected {other:?}"),
        }
        chmod(&dir.join(SIGNING_KEY_FILE), 0o600);

        chmod(&dir, 0o755);
        assert!(matches!(load_kek(&dir), Err(Error::InsecurePermissions { .. })));
        assert!(matches!(
            create_key_dir(&dir),
            Err(Error::InsecurePermissions { .. })
        ));
        chmod(&dir, 0o700);

        // Any other stray file with loose bits is refused too.
        fs::write(dir.join("notes.txt"), b"x").unwrap();
        chmod(&dir.join("notes.txt"), 0o604);
        assert!(matches!(load_kek(&dir), Err(Error::InsecurePermissions { name }) if name == "notes.txt"));
        fs::remove_file(dir.join("notes.txt")).unwrap();
        load_kek(&dir).unwrap();
    }

    #[test]
    fn raw_kek_file_accepted_and_bad_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        DirBuilder::new().mode(0o700).create(&dir).unwrap();
        write_new(&dir, KEK_FILE, &[3u8; 32]).unwrap();
        let kek = load_kek(&dir).unwrap();
        let dk = crate::DataKey::generate().unwrap();
        let w = kek.wrap(&dk).unwrap();
        assert_eq!(Kek::from_bytes(&[3u8; 32]).unwrap().unwrap(&w).unwrap(), dk);
        fs::remove_file(dir.join(KEK_FILE)).unwrap();
        write_new(&dir, KEK_FILE, b"not base64!!").unwrap();
        assert!(matches!(load_kek(&dir), Err(Error::Malformed(_))));
        assert!(matches!(load_signing_key(&dir), Err(Error::Io { .. })));
    }

    #[test]
    fn ensure_audit_key_for_older_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        create_key_dir(&dir).unwrap();
        fs::remove_file(dir.join(AUDIT_KEY_FILE)).unwrap();
        assert!(matches!(load_audit_key(&dir), Err(Error::Io { .. })));
        assert!(ensure_audit_key(&dir).unwrap());
        assert_eq!(
            fs::metadata(dir.join(AUDIT_KEY_FILE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        let k = load_audit_key(&dir).unwrap();
        assert!(!ensure_audit_key(&dir).unwrap());
        assert_eq!(load_audit_key(&dir).unwrap().public_key(), k.public_key());
        chmod(&dir.join(AUDIT_KEY_FILE), 0o644);
        assert!(
            matches!(load_audit_key(&dir), Err(Error::InsecurePermissions { name }) if name == AUDIT_KEY_FILE)
        );
    }
}
