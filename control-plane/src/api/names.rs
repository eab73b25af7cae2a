//! The shapes of names Kubernetes checks everywhere (k8s.io/apimachinery's `validation`): DNS-1123
//! labels and subdomains, qualified names (label and annotation keys, finalizers) and label values,
//! with the messages kube-apiserver answers, since users search for them; and the random parts of the
//! names and UIDs the server makes.

const NAME_PART: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Checks a DNS-1123 label (`label == true`, at most 63) or subdomain (at most 253) name.
pub fn validate_name(name: &str, label: bool) -> Result<(), String> {
    let max = if label { 63 } else { 253 };
    if name.is_empty() || name.len() > max {
        return Err(format!("must be between 1 and {max} characters"));
    }
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !p.starts_with('-')
            && !p.ends_with('-')
    };
    let ok = if label {
        part_ok(name)
    } else {
        name.split('.').all(part_ok)
    };
    if ok {
        Ok(())
    } else if label {
        Err("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".into())
    } else {
        Err("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into())
    }
}

/// A name that only has to be a URL path segment (RBAC's roles and bindings: `system:discovery`):
/// not `.` or `..`, no `/` or `%`.
pub fn validate_path_segment_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("may not be '{name}'"));
    }
    if let Some(bad) = ["/", "%"].iter().find(|c| name.contains(**c)) {
        return Err(format!("may not contain '{bad}'"));
    }
    Ok(())
}

/// The name rule of a resource: RBAC objects' names are path segments, the rest DNS-1123 labels
/// or subdomains.
pub fn validate_object_name(r: &super::resources::Resource, name: &str) -> Result<(), String> {
    if r.group == "rbac.authorization.k8s.io" {
        validate_path_segment_name(name)
    } else {
        validate_name(name, r.label_names)
    }
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_name_part(s: &str) -> bool {
    let alnum = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
    alnum(s.as_bytes().first())
        && alnum(s.as_bytes().last())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A qualified name (`[prefix/]name`: a label or annotation key, a finalizer): a DNS subdomain
/// prefix and a name part of at most 63 characters. Returns every reason it is not one.
pub fn qualified_name(s: &str) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) if !n.contains('/') => (Some(p), n),
        Some(_) => {
            return Err(vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
            ]);
        }
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            why.push("prefix part must be non-empty".into());
        } else if let Err(e) = validate_name(prefix, false) {
            why.push(format!("prefix part {e}"));
        }
    }
    if name.is_empty() {
        why.push("name part must be non-empty".into());
    } else {
        if name.len() > 63 {
            why.push("name part must be no more than 63 characters".into());
        }
        if !is_name_part(name) {
            why.push(NAME_PART.into());
        }
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

/// A label value: empty, or a name part of at most 63 characters.
pub fn label_value(s: &str) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if s.len() > 63 {
        why.push("must be no more than 63 characters".into());
    }
    if !s.is_empty() && !is_name_part(s) {
        why.push(LABEL_VALUE.into());
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

/// Finalizers Kubernetes defines without a prefix; any other finalizer must be prefixed.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

/// A finalizer name: a qualified name, and prefixed unless it is one of Kubernetes' own.
pub fn finalizer(s: &str) -> Result<(), Vec<String>> {
    qualified_name(s)?;
    if !s.contains('/') && !STANDARD_FINALIZERS.contains(&s) {
        return Err(vec![
            "name is neither a standard finalizer name nor is it fully qualified".into(),
        ]);
    }
    Ok(())
}

/// Random bytes from the kernel (zeros if `/dev/urandom` cannot be read, which leaves generated
/// names and addresses valid, only predictable).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b
}

/// The characters Kubernetes puts in generated names and hashes: no vowels, so no words.
pub const NAME_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five random characters for `generateName` (27^5 = 14 million names per prefix) and other
/// generated names (`kube-api-access-XXXXX`).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = NAME_ALPHABET;
    random_bytes::<5>()
        .iter()
        .map(|x| char::from(ALPHABET[usize::from(*x) % ALPHABET.len()]))
        .collect()
}

/// A random (version 4) UUID.
pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_and_label_values() {
        for ok in ["app", "app.kubernetes.io/name", "A_b-c.d", "x", "example.com/X9"] {
            assert_eq!(qualified_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a b",
            "!!!",
            "a/b/c",
            "/a",
            "Example.com/a",
            "a/",
            &"n".repeat(64),
        ] {
            assert!(qualified_name(bad).is_err(), "{bad}");
        }
        for ok in ["", "v1", "a.b_c-d", &"v".repeat(63)] {
            assert_eq!(label_value(ok), Ok(()), "{ok}");
        }
        for bad in ["-v", "v ", "a/b", &"v".repeat(64)] {
            assert!(label_value(bad).is_err(), "{bad}");
        }
        assert_eq!(finalizer("kubernetes"), Ok(()));
        assert_eq!(finalizer("example.com/cleanup"), Ok(()));
        assert!(finalizer("cleanup").is_err());
        assert!(finalizer("a b").is_err());
    }
}
