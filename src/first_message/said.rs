//! What a `connect` says of its client (`params.client`: id, mode, version) and asks for
//! (`params.role`, `params.scopes`; a paired device's `params.auth.deviceToken`; whether
//! `params.device` signs it): read by the same walk that finds the token (`Facts::scan`),
//! so the session's audit and the credential's scope check cost no second pass.

use serde_json::Value;

use crate::credentials::Presented;

/// A scope that is not a string, as the scope check sees it (it matches no allowed scope).
pub const NOT_A_STRING: &str = "<non-string>";

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Scopes {
    /// No `params.scopes`, or `null` (the gateway's default then).
    #[default]
    Absent,
    List(Vec<String>),
    /// `params.scopes` is there and is no array: what was asked cannot be told.
    Invalid,
}

/// The values as the client sent them (the client's fields not yet filtered for printing).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Said {
    pub client_id: Option<String>,
    pub client_mode: Option<String>,
    pub client_version: Option<String>,
    pub role: Option<String>,
    pub scopes: Scopes,
    /// `params.auth.deviceToken`, a non-empty string: its `Presented::key` (never the token).
    pub device_token: Option<u64>,
    /// `params.device` is an object.
    pub signed: bool,
    /// `params` is an object (else what is asked cannot be told).
    pub params: bool,
    /// The walk's own: one element of `params.scopes` on its way up.
    pub(super) scope_item: Option<String>,
}

/// Where a value sits in a `connect`, for what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Off,
    Top,
    Params,
    Client,
    ClientId,
    ClientMode,
    ClientVersion,
    Role,
    Scopes,
    Scope,
    Auth,
    DeviceToken,
    Device,
}

impl Place {
    /// The place of the member `key` of an object at this place.
    pub fn child(self, key: &str) -> Place {
        match (self, key) {
            (Place::Top, "params") => Place::Params,
            (Place::Params, "client") => Place::Client,
            (Place::Params, "role") => Place::Role,
            (Place::Params, "scopes") => Place::Scopes,
            (Place::Params, "auth") => Place::Auth,
            (Place::Params, "device") => Place::Device,
            (Place::Client, "id") => Place::ClientId,
            (Place::Client, "mode") => Place::ClientMode,
            (Place::Client, "version") => Place::ClientVersion,
            (Place::Auth, "deviceToken") => Place::DeviceToken,
            _ => Place::Off,
        }
    }
}

impl Said {
    /// A string at `place`.
    pub fn string(place: Place, v: &str) -> Said {
        let mut s = Said::default();
        match place {
            Place::ClientId => s.client_id = Some(v.into()),
            Place::ClientMode => s.client_mode = Some(v.into()),
            Place::ClientVersion => s.client_version = Some(v.into()),
            Place::Role => s.role = Some(v.into()),
            Place::Scope => s.scope_item = Some(v.into()),
            Place::DeviceToken if !v.is_empty() => {
                s.device_token = Some(Presented::new(v.as_bytes()).key())
            }
            Place::Scopes => s.scopes = Scopes::Invalid,
            _ => {}
        }
        s
    }

    /// Any value but a string, array or object at `place` (`null`: `is_null`).
    pub fn scalar(place: Place, is_null: bool) -> Said {
        let mut s = Said::default();
        match place {
            Place::Scope => s.scope_item = Some(NOT_A_STRING.into()),
            Place::Scopes if !is_null => s.scopes = Scopes::Invalid,
            Place::Role if !is_null => s.role = Some(NOT_A_STRING.into()),
            _ => {}
        }
        s
    }

    /// An object at `place`, before its members.
    pub fn object(place: Place) -> Said {
        let mut s = Said::default();
        match place {
            Place::Params => s.params = true,
            Place::Device => s.signed = true,
            Place::Scopes => s.scopes = Scopes::Invalid,
            Place::Scope => s.scope_item = Some(NOT_A_STRING.into()),
            Place::Role => s.role = Some(NOT_A_STRING.into()),
            _ => {}
        }
        s
    }

    /// An array at `place`, before its elements (`params.scopes` is filled by the walk).
    pub fn array(place: Place) -> Said {
        let mut s = Said::default();
        match place {
            Place::Scope => s.scope_item = Some(NOT_A_STRING.into()),
            Place::Role => s.role = Some(NOT_A_STRING.into()),
            _ => {}
        }
        s
    }

    /// What the member at `child` said, in place of what an earlier member of the same name
    /// said (a repeated key overrides, as in a map).
    pub fn take(&mut self, child: Place, from: Said) {
        match child {
            Place::Params => *self = from,
            Place::Client => {
                self.client_id = from.client_id;
                self.client_mode = from.client_mode;
                self.client_version = from.client_version;
            }
            Place::ClientId => self.client_id = from.client_id,
            Place::ClientMode => self.client_mode = from.client_mode,
            Place::ClientVersion => self.client_version = from.client_version,
            Place::Role => self.role = from.role,
            Place::Scopes => self.scopes = from.scopes,
            Place::Auth | Place::DeviceToken => self.device_token = from.device_token,
            Place::Device => self.signed = from.signed,
            Place::Off | Place::Top | Place::Scope => {}
        }
    }

    /// The reference reading, from a whole document: what the walk must find.
    pub fn of(doc: &Value) -> Said {
        let Some(params) = doc.get("params") else {
            return Said::default();
        };
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            _ => NOT_A_STRING.into(),
        };
        let client = |k: &str| {
            params
                .get("client")
                .and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Said {
            client_id: client("id"),
            client_mode: client("mode"),
            client_version: client("version"),
            role: params.get("role").filter(|r| !r.is_null()).map(text),
            scopes: match params.get("scopes") {
                None | Some(Value::Null) => Scopes::Absent,
                Some(Value::Array(a)) => Scopes::List(a.iter().map(text).collect()),
                Some(_) => Scopes::Invalid,
            },
            device_token: params
                .pointer("/auth/deviceToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(|t| Presented::new(t.as_bytes()).key()),
            signed: params.get("device").is_some_and(Value::is_object),
            params: params.is_object(),
            scope_item: None,
        }
    }
}
