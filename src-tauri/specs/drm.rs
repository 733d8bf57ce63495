//! The Linux DRM sysfs reader: GPUs as `<sys root>/class/drm/card*/device/` describes them. The
//! last fallback of [`super::collect`], and the only source of AMD VRAM when sysinfo's own reader
//! finds nothing. The root is a parameter so tests can point it at fixture trees; nothing here
//! knows about sysinfo or NVML.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use tracing::debug;

use super::{bytes_to_gib, Vendor};
use crate::protocol::GpuSpec;

/// sysfs attributes are a line or two; anything longer is not what we expect, and a cap keeps a
/// hostile or broken tree from making us read a huge file.
const MAX_ATTRIBUTE: u64 = 4096;

/// The longest GPU name we keep: a real `product_name` is a few dozen characters.
const MAX_NAME: usize = 128;

/// Every GPU under `<sys_root>/class/drm/`, in card order (`card2` before `card10`).
///
/// Skips connectors (`card0-HDMI-A-1`), render nodes (`renderD128`), cards whose PCI class is not
/// a display controller, and cards of unknown vendors (virtual and BMC adapters: virtio, QXL,
/// ASPEED, none of which run a model). A missing tree, unreadable files or garbage in them give
/// fewer or emptier entries, never an error.
pub fn drm_gpus(sys_root: &Path) -> Vec<GpuSpec> {
    drm_gpus_with_vendor(sys_root).into_iter().map(|(_, gpu)| gpu).collect()
}

/// [`drm_gpus`] with each card's vendor, so the caller can merge with other sources by vendor.
pub(super) fn drm_gpus_with_vendor(sys_root: &Path) -> Vec<(Vendor, GpuSpec)> {
    let drm = sys_root.join("class").join("drm");
    let entries = match std::fs::read_dir(&drm) {
        Ok(entries) => entries,
        Err(error) => {
            debug!(path = %drm.display(), %error, "no DRM sysfs tree");
            return Vec::new();
        }
    };
    // `read_dir` order is arbitrary; sort by card number so the output is stable.
    let mut cards: Vec<(u32, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            // Connectors (`card0-DP-1`) and anything not `card<N>` fail this parse.
            let index = name.to_str()?.strip_prefix("card")?.parse::<u32>().ok()?;
            Some((index, entry.path()))
        })
        .collect();
    cards.sort_by_key(|(index, _)| *index);

    cards.into_iter().filter_map(|(_, card)| read_card(&card.join("device"))).collect()
}

fn read_card(device: &Path) -> Option<(Vendor, GpuSpec)> {
    // A PCI class not starting with 0x03 (display controller) is something else the DRM driver
    // exposes; a missing class file is tolerated, as some platform devices have none.
    if let Some(class) = read_hex(&device.join("class")) {
        if class >> 16 != 0x03 {
            debug!(device = %device.display(), class = format_args!("{class:#08x}"), "not a display controller");
            return None;
        }
    }
    let Some(vendor_id) = read_hex(&device.join("vendor")) else {
        debug!(device = %device.display(), "no readable PCI vendor");
        return None;
    };
    let vendor = Vendor::from_pci(vendor_id);
    if vendor == Vendor::Other {
        debug!(device = %device.display(), vendor = format_args!("{vendor_id:#06x}"), "not a GPU vendor we report");
        return None;
    }
    let name = read_name(&device.join("product_name")).unwrap_or_else(|| match read_hex(&device.join("device")) {
        Some(id) => format!("{} GPU {id:#06x}", vendor.short_name()),
        None => format!("{} GPU", vendor.short_name()),
    });
    // AMD's amdgpu publishes its VRAM in bytes; 0 means "no dedicated VRAM" (an APU), not 0 GiB.
    let vram = read_text(&device.join("mem_info_vram_total"))
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|bytes| *bytes > 0)
        .map(bytes_to_gib);
    Some((vendor, GpuSpec { name, vram }))
}

/// The file's text, lossily decoded, at most [`MAX_ATTRIBUTE`] bytes; `None` when unreadable.
fn read_text(path: &Path) -> Option<String> {
    let mut bytes = Vec::new();
    File::open(path).ok()?.take(MAX_ATTRIBUTE).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A `0x`-prefixed (or bare) hexadecimal attribute such as `vendor`, `device` or `class`.
fn read_hex(path: &Path) -> Option<u32> {
    let text = read_text(path)?;
    let text = text.trim();
    let digits = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")).unwrap_or(text);
    u32::from_str_radix(digits, 16).ok()
}

/// A human name from `product_name`, only when it looks like one: printable and not too long, so
/// garbage in the file falls back to the vendor + device id name instead of reaching the UI.
fn read_name(path: &Path) -> Option<String> {
    let text = read_text(path)?;
    let name = text.trim();
    let printable = name.chars().all(|c| !c.is_control() && c != char::REPLACEMENT_CHARACTER);
    (!name.is_empty() && name.chars().count() <= MAX_NAME && printable).then(|| name.to_owned())
}
