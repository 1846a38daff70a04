//! Endpoints as a node registers them: a name, addresses, labels, a
//! namespace (and its labels), named container ports, an interface.
//!
//! Input: command-line flags or a JSON file (one endpoint or a list);
//! output: `EndpointSpec`s, which an `Installation` turns into entries of
//! the identity map (address → the artifact's predicate bits and named
//! ports) live, without reloading anything.

use std::collections::BTreeMap;
use std::path::Path;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::identity::{Endpoint, Identity};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Unique within an installation (a pod's `namespace/name`, say).
    pub name: String,
    /// Its addresses (a bare address is a /32 or /128).
    #[serde(deserialize_with = "nets")]
    pub addresses: Vec<IpNet>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub namespace_labels: BTreeMap<String, String>,
    /// Container port names → numbers (`named http` in a policy).
    #[serde(default)]
    pub named_ports: BTreeMap<String, u16>,
    /// The interface it sits behind, for `endpoint list` and attaching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// An address or prefix: `10.0.1.5` (all of it) or `10.0.1.0/24`.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an address or prefix"))
}

fn nets<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|t| parse_net(t).map_err(serde::de::Error::custom))
        .collect()
}

fn default_namespace() -> String {
    "default".into()
}

impl EndpointSpec {
    pub fn identity(&self) -> Identity {
        Identity::Endpoint(Endpoint {
            labels: self.labels.clone(),
            namespace: self.namespace.clone(),
            namespace_labels: self.namespace_labels.clone(),
            named_ports: self.named_ports.clone(),
        })
    }

    /// Names, addresses and ports that make sense.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("an endpoint needs a name".into());
        }
        if self.addresses.is_empty() {
            return Err(format!("endpoint `{}` has no address", self.name));
        }
        if let Some((n, _)) = self.named_ports.iter().find(|(_, p)| **p == 0) {
            return Err(format!(
                "endpoint `{}`: named port `{n}` needs a number from 1 to 65535",
                self.name
            ));
        }
        Ok(())
    }

    /// One endpoint or a list of them, as JSON.
    pub fn read_file(path: &Path) -> Result<Vec<EndpointSpec>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<EndpointSpec>),
            One(EndpointSpec),
        }
        let specs = match serde_json::from_str::<OneOrMany>(&text) {
            Ok(OneOrMany::Many(v)) => v,
            Ok(OneOrMany::One(e)) => vec![e],
            Err(_) => {
                // The untagged error says nothing useful: try the list form
                // for its message (line and column).
                let e = serde_json::from_str::<Vec<EndpointSpec>>(&text)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                return Err(format!(
                    "{}: not an endpoint or a list of endpoints: {e}\n  = hint: {{\"name\": \"web-1\", \"addresses\": [\"10.0.1.5\"], \"labels\": {{\"app\": \"web\"}}, \"namespace\": \"shop\"}}",
                    path.display()
                ));
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for s in &specs {
            s.check()?;
            if !seen.insert(&s.name) {
                return Err(format!("{}: endpoint `{}` twice", path.display(), s.name));
            }
        }
        Ok(specs)
    }
}
