//! Secrets come from the environment or a file, never the command line,
//! where `ps` and `/proc/<pid>/cmdline` show them to every user of the
//! machine.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("{name} is not set: give the secret in {name} or a file named by {name}_FILE")]
    Missing { name: String },
    #[error("{name} and {name}_FILE are both set: give one")]
    Both { name: String },
    #[error("{name} is empty")]
    Empty { name: String },
    #[error("cannot read {name}_FILE {path:?}: {reason}")]
    Unreadable {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// The secret `name`: the variable's value, or the contents of the file
/// `<name>_FILE` names (as Kubernetes mounts a Secret), one trailing newline
/// dropped. `lookup` reads the environment (a parameter, for tests).
pub fn read(name: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, SecretError> {
    let file_var = format!("{name}_FILE");
    let value = match (lookup(name), lookup(&file_var)) {
        (Some(_), Some(_)) => return Err(SecretError::Both { name: name.into() }),
        (Some(v), None) => v,
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let text = std::fs::read_to_string(&path).map_err(|e| SecretError::Unreadable {
                name: name.into(),
                path: path.clone(),
                reason: e.to_string(),
            })?;
            text.strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text)
                .to_string()
        }
        (None, None) => return Err(SecretError::Missing { name: name.into() }),
    };
    if value.is_empty() {
        return Err(SecretError::Empty { name: name.into() });
    }
    Ok(value)
}

/// [`read`] from this process's environment.
pub fn from_env(name: &str) -> Result<String, SecretError> {
    read(name, |v| std::env::var(v).ok())
}

/// An optional secret (e.g. the previous one during a rotation): [`read`]'s
/// rules, but neither `name` nor `<name>_FILE` set, or an empty value (a
/// Secret key emptied to end the rotation), is `None`. Both set, or a file
/// that cannot be read, is still an error.
pub fn read_optional(
    name: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, SecretError> {
    match read(name, lookup) {
        Ok(value) => Ok(Some(value)),
        Err(SecretError::Missing { .. } | SecretError::Empty { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// [`read_optional`] from this process's environment.
pub fn optional_from_env(name: &str) -> Result<Option<String>, SecretError> {
    read_optional(name, |v| std::env::var(v).ok())
}

/// Whether a URL carries a password (`scheme://user:password@host/…`).
pub fn url_has_password(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| u.password().is_some_and(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_the_variable_or_a_file() {
        assert_eq!(read("S", env(&[("S", "k")])), Ok("k".into()));
        let dir = std::env::temp_dir().join(format!("paysaga-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "from a file\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(
            read("S", env(&[("S_FILE", path)])),
            Ok("from a file".into())
        );
        assert!(matches!(
            read("S", env(&[("S_FILE", "/no/such/file")])),
            Err(SecretError::Unreadable { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_both_or_empty_is_an_error() {
        assert_eq!(
            read("S", env(&[])),
            Err(SecretError::Missing { name: "S".into() })
        );
        assert_eq!(
            read("S", env(&[("S", "a"), ("S_FILE", "/x")])),
            Err(SecretError::Both { name: "S".into() })
        );
        assert_eq!(
            read("S", env(&[("S", "")])),
            Err(SecretError::Empty { name: "S".into() })
        );
    }

    #[test]
    fn an_optional_secret_may_be_absent_or_empty() {
        assert_eq!(read_optional("S", env(&[])), Ok(None));
        assert_eq!(read_optional("S", env(&[("S", "")])), Ok(None));
        assert_eq!(read_optional("S", env(&[("S", "k")])), Ok(Some("k".into())));
        assert_eq!(
            read_optional("S", env(&[("S", "a"), ("S_FILE", "/x")])),
            Err(SecretError::Both { name: "S".into() })
        );
        assert!(matches!(
            read_optional("S", env(&[("S_FILE", "/no/such/file")])),
            Err(SecretError::Unreadable { .. })
        ));
    }

    #[test]
    fn passwords_in_urls() {
        assert!(url_has_password("postgres://u:pw@127.0.0.1:5432/db"));
        assert!(!url_has_password("postgres://u@127.0.0.1:5432/db"));
        assert!(!url_has_password("sqlite:///tmp/ledger.db"));
    }
}
