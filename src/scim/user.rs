//! Pure: the SCIM User a recipient is on the target (RFC 7643 section 4.1),
//! and whether a user the target holds differs from it in what flagsync
//! sends.

use serde_json::{json, Map, Value};

use crate::config::{Scim, ScimAttribute};
use crate::import::record::Record;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The User recipient `id` with `record` is on the target. Empty values are
/// left out; `active` is true unless mapped, and a mapped value that is not
/// yes/no is sent as written for the target to judge.
pub fn user_json(scim: &Scim, id: &str, record: &Record) -> Value {
    let value_of = |field: Option<usize>| -> String {
        match field {
            None => id.to_string(),
            Some(i) => record.values.get(i).cloned().unwrap_or_default(),
        }
    };
    let mut user = Map::new();
    user.insert("schemas".into(), json!([USER_SCHEMA]));
    user.insert("active".into(), json!(true));
    let mut name = Map::new();
    let mut emails = Vec::new();
    let mut phones = Vec::new();
    for (attribute, field) in &scim.attributes {
        let value = value_of(*field);
        if value.is_empty() {
            continue;
        }
        match attribute {
            ScimAttribute::UserName => {
                user.insert("userName".into(), json!(value));
            }
            ScimAttribute::ExternalId => {
                user.insert("externalId".into(), json!(value));
            }
            ScimAttribute::DisplayName => {
                user.insert("displayName".into(), json!(value));
            }
            ScimAttribute::GivenName => {
                name.insert("givenName".into(), json!(value));
            }
            ScimAttribute::FamilyName => {
                name.insert("familyName".into(), json!(value));
            }
            ScimAttribute::Active => {
                user.insert("active".into(), active_value(&value));
            }
            ScimAttribute::Email(kind) => emails.push(json!({"value": value, "type": kind})),
            ScimAttribute::Phone(kind) => phones.push(json!({"value": value, "type": kind})),
        }
    }
    if !name.is_empty() {
        user.insert("name".into(), Value::Object(name));
    }
    if let Some(Value::Object(first)) = emails.first_mut() {
        first.insert("primary".into(), json!(true));
    }
    if !emails.is_empty() {
        user.insert("emails".into(), Value::Array(emails));
    }
    if !phones.is_empty() {
        user.insert("phoneNumbers".into(), Value::Array(phones));
    }
    Value::Object(user)
}

fn active_value(value: &str) -> Value {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "1" | "active" => json!(true),
        "false" | "no" | "n" | "0" | "inactive" => json!(false),
        _ => json!(value),
    }
}

/// `user` with `active` false: what a removed recipient becomes with
/// `scim_remove = "deactivate"` (the sender PATCHes just `active`).
#[cfg(test)]
fn deactivated(user: &Value) -> Value {
    let mut user = user.clone();
    if let Value::Object(map) = &mut user {
        map.insert("active".into(), json!(false));
        map.remove("id");
        map.remove("meta");
    }
    user
}

/// What flagsync compares of a user: the attributes it sends, multi-valued
/// ones as sorted (type, value) pairs, a missing `active` as true.
fn projection(user: &Value) -> Value {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let pairs = |key: &str| {
        let mut list: Vec<(String, String)> = user
            .get(key)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .map(|item| (text(item.get("type")), text(item.get("value"))))
                    .collect()
            })
            .unwrap_or_default();
        list.sort();
        list
    };
    json!({
        "userName": text(user.get("userName")),
        "externalId": text(user.get("externalId")),
        "displayName": text(user.get("displayName")),
        "givenName": text(user.pointer("/name/givenName")),
        "familyName": text(user.pointer("/name/familyName")),
        "active": user.get("active").cloned().unwrap_or(json!(true)),
        "emails": pairs("emails"),
        "phoneNumbers": pairs("phoneNumbers"),
    })
}

/// Whether the target's `have` differs from `want` in what flagsync sends.
pub fn differs(want: &Value, have: &Value) -> bool {
    projection(want) != projection(have)
}

/// A PATCH body adding (`true`) or removing user `member` to/from a group.
pub fn membership_patch(member: &str, add: bool) -> Value {
    let operation = if add {
        json!({"op": "add", "path": "members", "value": [{"value": member}]})
    } else {
        json!({"op": "remove", "path": format!("members[value eq \"{}\"]", member.replace('"', "\\\""))})
    };
    json!({"schemas": [PATCH_SCHEMA], "Operations": [operation]})
}

/// A PATCH body setting `active` to false.
pub fn deactivate_patch() -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "active", "value": false}]})
}

/// A Group named `name` with `members` (the target's user ids).
pub fn group_json(name: &str, members: &[String]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    json!({"schemas": [GROUP_SCHEMA], "displayName": name, "members": members})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scim() -> Scim {
        let text = "[[feed]]\nname = \"hr\"\n[[feed.field]]\nname = \"id\"\ntype = \"id\"\n\
            [[feed.field]]\nname = \"first\"\n[[feed.field]]\nname = \"mail\"\ntype = \"email\"\n\
            [feed.scim]\nbase_url = \"https://t/scim/v2\"\ntoken_file = \"t\"\n\
            [feed.scim.attributes]\n\"name.givenName\" = \"first\"\n\"emails[work]\" = \"mail\"\n";
        let config = crate::config::Config::parse(text, crate::config::Source::Embedded).unwrap();
        config.feeds[0].scim.clone().unwrap()
    }

    fn record(values: &[&str]) -> Record {
        Record {
            values: values.iter().map(|v| v.to_string()).collect(),
            groups: Vec::new(),
        }
    }

    #[test]
    fn a_recipient_becomes_a_user_with_its_mapped_values_and_no_empty_ones() {
        let user = user_json(&scim(), "E1", &record(&["E1", "Ann", "ann@x.org"]));
        assert_eq!(user["userName"], "E1");
        assert_eq!(user["externalId"], "E1");
        assert_eq!(user["name"]["givenName"], "Ann");
        assert_eq!(user["emails"][0]["type"], "work");
        assert_eq!(user["active"], true);
        let bare = user_json(&scim(), "E2", &record(&["E2", "", ""]));
        assert!(bare.get("name").is_none() && bare.get("emails").is_none());
    }

    #[test]
    fn only_what_flagsync_sends_is_compared() {
        let want = user_json(&scim(), "E1", &record(&["E1", "Ann", "ann@x.org"]));
        let mut have = want.clone();
        have["id"] = json!("abc");
        have["meta"] = json!({"version": "1"});
        have["emails"][0]["primary"] = json!(false);
        assert!(!differs(&want, &have));
        have["emails"][0]["value"] = json!("other@x.org");
        assert!(differs(&want, &have));
        assert!(differs(&want, &deactivated(&want)));
    }
}
