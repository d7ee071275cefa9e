//! Bearer tokens: the token file both `serve` and the clients read, the roles it names, the
//! constant-time comparison the server checks a presented token with, and the least privileged
//! token a client sends for a request.
//!
//! A token file holds lines `read=TOKEN`, `write=TOKEN` and `admin=TOKEN` (any of them, each at
//! most once), blank lines and `#` comments. The roles are ordered: a write token may do what a
//! read token may, an admin token anything.

use std::path::Path;

/// What a token may do. Ordered from least to most privileged: each role may do what the roles
/// before it may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: `GET /kv/...`, `GET /cluster/members`, and `/status` and `/metrics`.
    Read,
    /// Writes: `PUT`/`DELETE /kv/...`, `POST /kv/.../cas`, and all that `Read` may.
    Write,
    /// Everything, including membership changes and the other `/cluster/*` routes.
    Admin,
}

impl Role {
    /// Every role, least privileged first.
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    /// The role's name in a token file.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn index(self) -> usize {
        match self {
            Role::Read => 0,
            Role::Write => 1,
            Role::Admin => 2,
        }
    }
}

/// The tokens of a token file, by role. `Debug` never shows a token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Indexed by [`Role::index`]; at least one is set.
    by_role: [Option<String>; 3],
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<&str> = Role::ALL
            .iter()
            .filter(|r| self.get(**r).is_some())
            .map(|r| r.name())
            .collect();
        f.debug_struct("Tokens").field("roles", &roles).finish()
    }
}

impl Tokens {
    /// Parses a token file's text. Refuses an unknown role, a role named twice, an empty
    /// token, a token with characters a `Bearer` header cannot carry, one token given to two
    /// roles (which role it has would be ambiguous), and a file without any token.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = Tokens::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("line {}", number + 1);
            let (role, token) = line
                .split_once('=')
                .ok_or_else(|| format!("{at}: expected ROLE=TOKEN (read, write or admin)"))?;
            let (role, token) = (role.trim(), token.trim());
            let role = match role {
                "read" => Role::Read,
                "write" => Role::Write,
                "admin" => Role::Admin,
                other => {
                    return Err(format!(
                        "{at}: unknown role {other:?} (expected read, write or admin)"
                    ));
                }
            };
            if token.is_empty() {
                return Err(format!("{at}: the {} token is empty", role.name()));
            }
            // RFC 6750's b64token: what a `Bearer` credential may hold.
            let allowed = |c: char| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/' | '=')
            };
            if !token.chars().all(allowed) {
                return Err(format!(
                    "{at}: the {} token may hold only letters, digits and - . _ ~ + / =",
                    role.name()
                ));
            }
            let slot = &mut tokens.by_role[role.index()];
            if slot.is_some() {
                return Err(format!("{at}: the {} role is given twice", role.name()));
            }
            if let Some(other) = Role::ALL.iter().find(|r| tokens.get(**r) == Some(token)) {
                return Err(format!(
                    "{at}: the {} token is also the {} token; give each role its own",
                    role.name(),
                    other.name()
                ));
            }
            tokens.by_role[role.index()] = Some(token.to_string());
        }
        if tokens.by_role.iter().all(Option::is_none) {
            return Err("no token: expected lines read=TOKEN, write=TOKEN or admin=TOKEN".into());
        }
        Ok(tokens)
    }

    /// Reads and parses a token file; every failure is one line naming the file.
    pub async fn load(path: &Path) -> Result<Tokens, String> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("--token-file {}: {e}", path.display()))
    }

    /// One token a client sends with every request, whatever it asks for (`--token`).
    pub fn single(token: &str) -> Result<Tokens, String> {
        let tokens = Tokens::parse(&format!("admin={token}")).map_err(|e| {
            let reason = e.split_once(": ").map_or(e.as_str(), |(_, r)| r);
            format!(
                "--token: {}",
                reason.replace("the admin token", "the token")
            )
        })?;
        let token = tokens.by_role[Role::Admin.index()].clone();
        Ok(Tokens {
            by_role: [token.clone(), token.clone(), token],
        })
    }

    /// The token of `role`, if the file names one.
    pub fn get(&self, role: Role) -> Option<&str> {
        self.by_role[role.index()].as_deref()
    }

    /// The role `presented` is the token of, if any. Every configured token is compared, each
    /// in constant time, so the time taken says nothing about how much of a token was right.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for role in Role::ALL {
            if let Some(token) = self.get(role)
                && constant_time_eq(token.as_bytes(), presented.as_bytes())
            {
                // The highest role matching: only `single` gives one token several roles.
                found = Some(role);
            }
        }
        found
    }

    /// The token a client sends for a request that needs `need`: the least privileged one that
    /// suffices (read → read, write or admin; write → write or admin; admin → admin), so that
    /// a token with more power travels only when it must. Without one that suffices, the most
    /// privileged token there is (the server then answers `403` and names the role needed).
    pub fn for_request(&self, need: Role) -> Option<&str> {
        let sufficient = Role::ALL.iter().filter(|r| **r >= need);
        let insufficient = Role::ALL.iter().rev().filter(|r| **r < need);
        sufficient
            .chain(insufficient)
            .find_map(|role| self.get(*role))
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths: every byte of
/// the longer is examined, with no exit at the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    difference(a, b).0 == 0
}

/// The OR of the differences of every byte pair of `a` and `b` (a missing byte counts as a
/// difference), and how many pairs were examined: the comparison's whole work, visible to
/// the tests.
fn difference(a: &[u8], b: &[u8]) -> (u8, usize) {
    let length = a.len().max(b.len());
    let mut folded = u8::from(a.len() != b.len());
    let mut examined = 0;
    for i in 0..length {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        // `black_box` keeps the compiler from turning the fold into an early exit.
        folded = std::hint::black_box(folded | (x ^ y));
        examined += 1;
    }
    (folded, examined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_names_each_role_at_most_once() {
        let tokens = Tokens::parse(
            "# the cluster's tokens\n\nread = r-1\n  write=w.2\nadmin=a~3/+=\n# end\n",
        )
        .unwrap();
        assert_eq!(tokens.get(Role::Read), Some("r-1"));
        assert_eq!(tokens.get(Role::Write), Some("w.2"));
        assert_eq!(tokens.get(Role::Admin), Some("a~3/+="));
        let some = Tokens::parse("write=w").unwrap();
        assert_eq!(some.get(Role::Read), None);
        assert!(!format!("{some:?}").contains("=w"), "Debug shows no token");
    }

    #[test]
    fn bad_token_files_are_refused_with_a_reason() {
        for (file, reason) in [
            ("", "no token"),
            ("# only a comment\n\n", "no token"),
            ("reader=x", "unknown role \"reader\""),
            ("READ=x", "unknown role"),
            ("read=a\nread=b", "line 2: the read role is given twice"),
            ("read=", "line 1: the read token is empty"),
            ("write=   ", "the write token is empty"),
            ("read x", "expected ROLE=TOKEN"),
            ("admin=two words", "may hold only"),
            ("admin=naïve", "may hold only"),
            ("read=same\nadmin=same", "also the read token"),
        ] {
            let refused = Tokens::parse(file).expect_err(file);
            assert!(refused.contains(reason), "{file:?}: {refused}");
        }
    }

    #[test]
    fn a_presented_token_has_the_role_it_was_given() {
        let tokens = Tokens::parse("read=r\nwrite=w\nadmin=a").unwrap();
        assert_eq!(tokens.role_of("r"), Some(Role::Read));
        assert_eq!(tokens.role_of("w"), Some(Role::Write));
        assert_eq!(tokens.role_of("a"), Some(Role::Admin));
        for unknown in ["", "x", "rr", "A", "r "] {
            assert_eq!(tokens.role_of(unknown), None, "{unknown:?}");
        }
    }

    #[test]
    fn the_comparison_is_exact_and_examines_every_byte() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        for other in [
            &b"Secret"[..],
            b"secreT",
            b"secre",
            b"secrets",
            b"",
            b"xxxxxx",
        ] {
            assert!(!constant_time_eq(b"secret", other), "{other:?}");
        }
        // No early exit: a difference in the first byte costs as much as one in the last,
        // and a shorter guess is compared over the whole length of the longer.
        let token = [7u8; 64];
        let mut first = token;
        first[0] = 8;
        let mut last = token;
        last[63] = 8;
        assert_eq!(difference(&token, &first).1, 64);
        assert_eq!(difference(&token, &last).1, 64);
        assert_eq!(difference(&token, b"x").1, 64);
        assert_eq!(difference(b"x", &token).1, 64);
    }

    #[test]
    fn a_client_sends_the_least_privileged_token_that_suffices() {
        let all = Tokens::parse("read=r\nwrite=w\nadmin=a").unwrap();
        assert_eq!(all.for_request(Role::Read), Some("r"));
        assert_eq!(all.for_request(Role::Write), Some("w"));
        assert_eq!(all.for_request(Role::Admin), Some("a"));
        let no_read = Tokens::parse("write=w\nadmin=a").unwrap();
        assert_eq!(no_read.for_request(Role::Read), Some("w"));
        let admin_only = Tokens::parse("admin=a").unwrap();
        for role in Role::ALL {
            assert_eq!(admin_only.for_request(role), Some("a"));
        }
        // Nothing suffices: the strongest there is, which the server refuses with a 403 that
        // names the role needed.
        let read_only = Tokens::parse("read=r").unwrap();
        assert_eq!(read_only.for_request(Role::Admin), Some("r"));
        let read_write = Tokens::parse("read=r\nwrite=w").unwrap();
        assert_eq!(read_write.for_request(Role::Admin), Some("w"));
        let one = Tokens::single("t").unwrap();
        for role in Role::ALL {
            assert_eq!(one.for_request(role), Some("t"));
        }
        assert!(Tokens::single("").unwrap_err().starts_with("--token: "));
    }
}
