//! What a credential's clients may ask the gateway for: the `roles` and `scopes` of its
//! `[[credentials]]` entry, checked against a `connect`'s `params.role` and `params.scopes`.
//! Refusing a wider ask (rather than narrowing it) keeps a device signature intact: the
//! signature covers the role and scopes as the client sent them.

use std::sync::Arc;

/// The role the OpenClaw gateway gives a `connect` that names none.
const DEFAULT_ROLE: &str = "operator";

/// The roles and scopes a credential allows (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowed {
    pub roles: Option<Arc<[String]>>,
    pub scopes: Option<Arc<[String]>>,
}

/// What a `connect` asks for: its role and scopes, as it sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ask {
    pub role: Option<String>,
    pub scopes: Vec<String>,
}

impl Allowed {
    pub fn new(roles: Option<&[String]>, scopes: Option<&[String]>) -> Option<Arc<Allowed>> {
        if roles.is_none() && scopes.is_none() {
            return None;
        }
        Some(Arc::new(Allowed {
            roles: roles.map(Arc::from),
            scopes: scopes.map(Arc::from),
        }))
    }

    /// `Err` names what is outside the credential's lists (a role or scope name, which is
    /// no secret).
    pub fn permits(&self, ask: &Ask) -> Result<(), String> {
        if let Some(roles) = &self.roles {
            // The gateway's own default for a `connect` naming no role.
            let role = ask.role.as_deref().unwrap_or(DEFAULT_ROLE);
            if !roles.iter().any(|r| r == role) {
                return Err(format!("role {role} not in the credential's roles"));
            }
        }
        if let Some(scopes) = &self.scopes {
            if let Some(s) = ask.scopes.iter().find(|s| !scopes.contains(s)) {
                return Err(format!("scope {s} not in the credential's scopes"));
            }
        }
        Ok(())
    }

    /// The `x-openclaw-scopes` value that caps a connection's scopes at the gateway.
    pub fn scopes_header(&self) -> Option<String> {
        self.scopes.as_ref().map(|s| s.join(","))
    }
}

impl Ask {
    pub fn describe_scopes(&self) -> String {
        if self.scopes.is_empty() {
            "-".into()
        } else {
            self.scopes.join(",")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(role: &str, scopes: &[&str]) -> Ask {
        Ask {
            role: Some(role.into()),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_narrower_ask_passes_and_a_wider_one_is_named() {
        let read = ["operator.read".to_string()];
        let a = Allowed::new(Some(&["operator".to_string()]), Some(&read)).unwrap();
        assert!(a.permits(&ask("operator", &["operator.read"])).is_ok());
        assert!(a.permits(&ask("operator", &[])).is_ok());
        let e = a
            .permits(&ask("operator", &["operator.read", "operator.admin"]))
            .unwrap_err();
        assert!(e.contains("operator.admin"), "{e}");
        assert!(a.permits(&ask("node", &[])).unwrap_err().contains("node"));
        assert_eq!(a.scopes_header().as_deref(), Some("operator.read"));
    }
}
