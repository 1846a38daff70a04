//! The table strategy's nodes on a node.
//!
//! The object carries them in its section `.cilc.table`; the programs walk
//! an inner array map held in slot 0 of the map-of-maps `cilc_table`. Every
//! object gets an inner map (a 1-node one when it has no table: the map
//! exists in every object, and a map-of-maps needs an inner map to exist).
//! The inner map is larger than the table (`capacity`) so that a later
//! artifact with the same code and a slightly larger table still fits: its
//! nodes go into a new inner map of the same size, swapped into slot 0 in
//! one update (`install::Installation::replace`, data only).

use std::os::fd::{AsFd, AsRawFd};

use libbpf_rs::{MapCore, MapFlags, MapHandle, MapType};
use object::{Object as _, ObjectSection as _};

use crate::manifest::{self, Manifest};
use crate::Error;

/// Bytes of one `struct cilc_tnode`.
pub const NODE: usize = 32;

/// Entries of the inner map for a table of `nodes`: an eighth more and
/// 1,024 spare, so a policy that grows by a few rules changes data only.
pub fn capacity(nodes: u32) -> u32 {
    nodes.saturating_add(nodes / 8).saturating_add(1024)
}

/// The artifact's nodes (empty when it is not a table-strategy object).
pub fn nodes<'a>(object: &'a [u8], manifest: &Manifest) -> Result<&'a [u8], Error> {
    let Some(n) = manifest.table_nodes else {
        return Ok(&[]);
    };
    let file = object::File::parse(object).map_err(|e| Error::NotCilc(e.to_string()))?;
    let data = file
        .section_by_name(manifest::TABLE_SECTION)
        .and_then(|s| s.data().ok())
        .ok_or_else(|| Error::NotCilc(format!("no {} section", manifest::TABLE_SECTION)))?;
    data.get(..n as usize * NODE).ok_or_else(|| {
        Error::NotCilc(format!(
            "{} holds {} bytes, not the {n} nodes the manifest says",
            manifest::TABLE_SECTION,
            data.len()
        ))
    })
}

/// A new inner map of `capacity` nodes holding `nodes` (from node 0).
pub fn create(capacity: u32, nodes: &[u8]) -> Result<MapHandle, Error> {
    let count = (nodes.len() / NODE) as u32;
    if count > capacity {
        return Err(Error::Kernel(format!(
            "a table of {count} nodes does not fit an inner map of {capacity}"
        )));
    }
    let opts = libbpf_sys::bpf_map_create_opts {
        sz: std::mem::size_of::<libbpf_sys::bpf_map_create_opts>() as _,
        ..Default::default()
    };
    let map = MapHandle::create(
        MapType::Array,
        Some("cilc_tnodes"),
        4,
        NODE as u32,
        capacity.max(1),
        &opts,
    )
    .map_err(|e| {
        Error::Kernel(format!(
            "cannot create the table map ({capacity} nodes): {e}"
        ))
    })?;
    if count > 0 {
        let keys: Vec<u8> = (0..count).flat_map(|i| i.to_ne_bytes()).collect();
        map.update_batch(&keys, nodes, count, MapFlags::ANY, MapFlags::ANY)
            .map_err(|e| Error::Kernel(format!("cannot fill the table: {e}")))?;
    }
    Ok(map)
}

/// Put `inner` in slot 0 of `outer`: from the next packet on, walks use it
/// (a walk in progress finishes on the map it started with).
pub fn install(outer: &impl MapCore, inner: &MapHandle) -> Result<(), Error> {
    let fd = inner.as_fd().as_raw_fd() as u32;
    outer
        .update(&0u32.to_ne_bytes(), &fd.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| Error::Kernel(format!("cannot install the table: {e}")))
}

/// Entries of the inner map in slot 0 of `outer` (None: the slot is empty).
pub fn installed_capacity(outer: &impl MapCore) -> Result<Option<u32>, Error> {
    let id = outer
        .lookup(&0u32.to_ne_bytes(), MapFlags::ANY)
        .map_err(|e| Error::Kernel(format!("cannot read the table slot: {e}")))?;
    let Some(id) = id.and_then(|v| v.try_into().ok().map(u32::from_ne_bytes)) else {
        return Ok(None);
    };
    let inner = MapHandle::from_map_id(id)
        .map_err(|e| Error::Kernel(format!("cannot open the table map {id}: {e}")))?;
    Ok(Some(inner.max_entries()))
}
