//! What a `connect` says of its client (`params.client`: id, mode, version) and asks for
//! (`params.role`, `params.scopes`; a paired device's `params.auth.deviceToken`; whether
//! `params.device` signs it): read by the same walk that finds the token (`Facts::scan`),
//! so the session's audit and the credential's scope check cost no second pass.

use serde_json::Value;

use crate::credentials::Presented;

/// A scope that is not a string, as the scope check sees it (it matches no allowed scope).
pub(super) const NOT_A_STRING: &str = "<non-string>";

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
}

/// What kind of value, besides a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Scalar,
    Object,
    Array,
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
    /// Forgets what the member at `child` said, before it is read (again: a repeated key
    /// overrides, as in a map).
    pub fn clear(&mut self, child: Place) {
        match child {
            Place::Params => *self = Said::default(),
            Place::Client => {
                self.client_id = None;
                self.client_mode = None;
                self.client_version = None;
            }
            Place::ClientId => self.client_id = None,
            Place::ClientMode => self.client_mode = None,
            Place::ClientVersion => self.client_version = None,
            Place::Role => self.role = None,
            Place::Scopes => self.scopes = Scopes::Absent,
            Place::Auth | Place::DeviceToken => self.device_token = None,
            Place::Device => self.signed = false,
            Place::Off | Place::Top | Place::Scope => {}
        }
    }

    /// A string at `place`.
    pub fn string(&mut self, place: Place, v: &str) {
        match place {
            Place::ClientId => self.client_id = Some(v.into()),
            Place::ClientMode => self.client_mode = Some(v.into()),
            Place::ClientVersion => self.client_version = Some(v.into()),
            Place::Role => self.role = Some(v.into()),
            Place::Scope => self.scope(v),
            Place::DeviceToken if !v.is_empty() => {
                self.device_token = Some(Presented::new(v.as_bytes()).key())
            }
            Place::Scopes => self.scopes = Scopes::Invalid,
            _ => {}
        }
    }

    /// Any other value at `place`: a number, `true`/`false`, `null` (`is_null`), an object
    /// or an array (`Kind`), before what it holds.
    pub fn other(&mut self, place: Place, kind: Kind) {
        match (place, kind) {
            (Place::Scope, _) => self.scope(NOT_A_STRING),
            (Place::Role | Place::Scopes, Kind::Null) => {}
            (Place::Role, _) => self.role = Some(NOT_A_STRING.into()),
            (Place::Scopes, Kind::Array) => self.scopes = Scopes::List(Vec::new()),
            (Place::Scopes, _) => self.scopes = Scopes::Invalid,
            (Place::Params, Kind::Object) => self.params = true,
            (Place::Device, Kind::Object) => self.signed = true,
            _ => {}
        }
    }

    fn scope(&mut self, v: &str) {
        if let Scopes::List(list) = &mut self.scopes {
            list.push(v.into());
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
        }
    }
}
