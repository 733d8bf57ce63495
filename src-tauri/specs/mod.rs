//! What this machine reports to a room: CPU brand and cores, total RAM, OS, and its GPUs with their
//! VRAM, as the wire's [`MachineSpecs`] (GiB everywhere). The participant session sends it on
//! registration and the CLI prints it (`gambi specs`); neither belongs here, nor does the local
//! model server (that is `provider`).
//!
//! GPUs come from sysinfo's GPU API first. Where it misses NVIDIA cards (no DRM device, or its own
//! NVML load failed) NVML is asked through `nvml-wrapper`, then the Linux DRM sysfs tree
//! ([`drm_gpus`]) adds any vendor still missing; Apple Silicon reports its unified memory as VRAM.
//! Every source may be absent: a missing library, driver or file means "not found", logged at
//! debug, never an error, and nothing here panics (third-party probes run under `catch_unwind`).
//!
//! All of it is blocking file and FFI work, so [`collect`] runs it on the blocking pool, once: the
//! answer is cached for the life of the process (hardware does not change under a session).

mod drm;

use std::path::Path;
use std::sync::OnceLock;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tracing::{debug, warn};

pub use drm::drm_gpus;

use crate::protocol::{GpuSpec, MachineSpecs};

/// Where Linux mounts sysfs; the DRM reader takes it as a parameter so tests use fixture trees.
const SYS_ROOT: &str = "/sys";

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The one cached answer, shared by [`collect`] and [`collect_blocking`]. A `std` `OnceLock`
/// rather than tokio's `OnceCell` because the sync caller needs it too; the async caller only ever
/// waits on it from the blocking pool.
static CACHE: OnceLock<MachineSpecs> = OnceLock::new();

/// This machine's specs, gathered once on the blocking pool and cached. Never fails: what cannot
/// be read is left out.
pub async fn collect() -> MachineSpecs {
    if let Some(specs) = CACHE.get() {
        return specs.clone();
    }
    // Outside a tokio runtime `spawn_blocking` would panic; there is no async thread to protect
    // then, so gather inline.
    if tokio::runtime::Handle::try_current().is_err() {
        return collect_blocking();
    }
    // Concurrent first callers each get a blocking task, and `OnceLock` makes all but one wait
    // there, so the gathering runs once and no async thread ever blocks.
    match tokio::task::spawn_blocking(collect_blocking).await {
        Ok(specs) => specs,
        Err(error) => {
            warn!(%error, "gathering the machine's specs failed; reporting none");
            MachineSpecs::default()
        }
    }
}

/// [`collect`] for callers without a runtime (the CLI before it starts one, tests). Blocks for as
/// long as the first gathering takes (tens of milliseconds, more when a GPU driver is slow to
/// answer): never call it on an async thread.
pub fn collect_blocking() -> MachineSpecs {
    CACHE.get_or_init(gather).clone()
}

/// GiB rounded to one decimal, the unit of every `vram`, `ram` and `size` on the wire.
pub fn bytes_to_gib(bytes: u64) -> f64 {
    (bytes as f64 / GIB * 10.0).round() / 10.0
}

/// The main GPU: the one with the most VRAM, the first listed on a tie or when none reports VRAM.
pub fn main_gpu(gpus: &[GpuSpec]) -> Option<&GpuSpec> {
    let vram = |gpu: &GpuSpec| gpu.vram.unwrap_or(-1.0);
    gpus.iter().fold(None, |best: Option<&GpuSpec>, gpu| match best {
        Some(best) if vram(gpu) <= vram(best) => Some(best),
        _ => Some(gpu),
    })
}

/// Only the GPU part, fresh (uncached): sysinfo, then NVML, then DRM sysfs, as the module doc
/// says. Blocking.
pub fn gpus() -> Vec<GpuSpec> {
    gather_gpus(None, None).into_iter().map(|(_, gpu)| gpu).collect()
}

/// The NVIDIA GPUs NVML reports. No library, no driver or no permission all mean no NVIDIA GPU:
/// an empty list, logged at debug. Blocking (NVML's init loads a shared library).
pub fn nvml_gpus() -> Vec<GpuSpec> {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(nvml) => nvml,
        Err(error) => {
            debug!(%error, "NVML unavailable: no NVIDIA GPU reported through it");
            return Vec::new();
        }
    };
    let count = match nvml.device_count() {
        Ok(count) => count,
        Err(error) => {
            debug!(%error, "NVML could not count devices");
            return Vec::new();
        }
    };
    (0..count)
        .filter_map(|index| {
            let device = match nvml.device_by_index(index) {
                Ok(device) => device,
                Err(error) => {
                    debug!(index, %error, "NVML could not open a device");
                    return None;
                }
            };
            let model = device.name().ok();
            let vram = device.memory_info().ok().map(|memory| memory.total).filter(|total| *total > 0);
            Some(GpuSpec { name: gpu_name(Vendor::Nvidia, "", model.as_deref()), vram: vram.map(bytes_to_gib) })
        })
        .collect()
}

/// Human lines for `gambi specs` and the app: (label, value) pairs, every field present (unknown
/// ones say so), one `GPU` row per GPU or a single "no GPU found".
pub fn summary(specs: &MachineSpecs) -> Vec<(String, String)> {
    let unknown = || "unknown".to_owned();
    let mut rows = vec![
        ("CPU".to_owned(), specs.cpu.clone().unwrap_or_else(unknown)),
        ("Cores".to_owned(), specs.cpu_cores.map(|cores| cores.to_string()).unwrap_or_else(unknown)),
        ("RAM".to_owned(), specs.ram.map(format_gib).unwrap_or_else(unknown)),
        ("OS".to_owned(), specs.os.clone().unwrap_or_else(unknown)),
    ];
    // A caller-given spec may carry only `gpu`/`vram` (the seed's shape) and no `gpus` list.
    let listed = match (&specs.gpus, &specs.gpu) {
        (Some(gpus), _) if !gpus.is_empty() => gpus.clone(),
        (_, Some(name)) => vec![GpuSpec { name: name.clone(), vram: specs.vram }],
        _ => Vec::new(),
    };
    if listed.is_empty() {
        rows.push(("GPU".to_owned(), "no GPU found".to_owned()));
    }
    for gpu in &listed {
        let value = match gpu.vram {
            Some(vram) => format!("{} ({} VRAM)", gpu.name, format_gib(vram)),
            None => gpu.name.clone(),
        };
        rows.push(("GPU".to_owned(), value));
    }
    rows
}

/// "16 GiB", "7.8 GiB": one decimal, none when it is zero.
fn format_gib(gib: f64) -> String {
    if gib.fract() == 0.0 {
        format!("{gib:.0} GiB")
    } else {
        format!("{gib:.1} GiB")
    }
}

/// A GPU maker, for naming and for merging sources (one source per vendor is trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Amd,
    Nvidia,
    Intel,
    Apple,
    Other,
}

impl Vendor {
    fn from_pci(id: u32) -> Self {
        match id {
            0x1002 | 0x1022 => Vendor::Amd,
            0x10de => Vendor::Nvidia,
            0x8086 => Vendor::Intel,
            0x106b => Vendor::Apple,
            _ => Vendor::Other,
        }
    }

    /// From a vendor name as sysinfo gives it (pci.ids names like "Advanced Micro Devices, Inc.
    /// [AMD/ATI]", "NVIDIA Corporation", "Apple Inc.").
    fn from_name(name: &str) -> Self {
        let lower = name.to_ascii_lowercase();
        if lower.contains("nvidia") {
            Vendor::Nvidia
        } else if lower.contains("amd") || lower.contains("advanced micro devices") || lower.contains("ati ") {
            Vendor::Amd
        } else if lower.contains("intel") {
            Vendor::Intel
        } else if lower.contains("apple") {
            Vendor::Apple
        } else {
            Vendor::Other
        }
    }

    fn short_name(self) -> &'static str {
        match self {
            Vendor::Amd => "AMD",
            Vendor::Nvidia => "NVIDIA",
            Vendor::Intel => "Intel",
            Vendor::Apple => "Apple",
            Vendor::Other => "",
        }
    }
}

/// A name that says who made the GPU: pci.ids models ("Navi 21 [Radeon RX 6800/6800 XT / 6900
/// XT]") and old NVML names ("GeForce GTX 1080") lack the vendor, so it is prefixed when missing.
fn gpu_name(vendor: Vendor, vendor_name: &str, model: Option<&str>) -> String {
    let model = model.map(|m| m.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|m| !m.is_empty());
    let short = vendor.short_name();
    match model {
        Some(model) if short.is_empty() || model.to_ascii_lowercase().contains(&short.to_ascii_lowercase()) => model,
        Some(model) => format!("{short} {model}"),
        None if !short.is_empty() => format!("{short} GPU"),
        None if !vendor_name.trim().is_empty() => format!("{} GPU", vendor_name.trim()),
        None => "GPU".to_owned(),
    }
}

/// Runs a third-party probe so that a panic inside it (sysinfo, NVML) loses only its own part of
/// the answer, never the caller: "nothing here ever panics".
fn guarded<T>(what: &str, probe: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(probe)) {
        Ok(value) => Some(value),
        Err(_) => {
            warn!(what, "reading the machine's specs panicked; leaving this part out");
            None
        }
    }
}

/// The uncached gathering behind [`collect`]. Blocking.
fn gather() -> MachineSpecs {
    let (cpu, cpu_cores, ram_bytes) = guarded("CPU and memory", cpu_and_memory).unwrap_or_default();
    let ram = ram_bytes.map(bytes_to_gib);
    let os = guarded("OS", os_name).flatten();
    let gpus: Vec<GpuSpec> = guarded("GPUs", || gather_gpus(cpu.as_deref(), ram))
        .unwrap_or_default()
        .into_iter()
        .map(|(_, gpu)| gpu)
        .collect();
    let main = main_gpu(&gpus).cloned();
    let specs = MachineSpecs {
        gpu: main.as_ref().map(|gpu| gpu.name.clone()),
        vram: main.and_then(|gpu| gpu.vram),
        ram,
        cpu,
        cpu_cores,
        os,
        gpus: (!gpus.is_empty()).then_some(gpus),
    };
    debug!(?specs, "machine specs gathered");
    specs
}

/// CPU brand, core count (physical when the OS says, else logical) and total RAM in bytes.
fn cpu_and_memory() -> (Option<String>, Option<u32>, Option<u64>) {
    let refresh =
        RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()).with_memory(MemoryRefreshKind::nothing().with_ram());
    let system = match System::new_with_specifics(refresh) {
        Ok(system) => Some(system),
        Err(error) => {
            debug!(%error, "sysinfo could not read the CPU and memory");
            None
        }
    };
    let cpus = system.as_ref().map(System::cpus).unwrap_or_default();
    // Collapse runs of spaces: some brands are padded ("Intel(R) Xeon(R) CPU      E5-2680").
    let tidy = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let brand = cpus
        .first()
        .map(|cpu| tidy(cpu.brand()))
        .filter(|brand| !brand.is_empty())
        .or_else(|| cpus.first().map(|cpu| tidy(cpu.vendor_id())).filter(|vendor| !vendor.is_empty()));
    let logical = Some(cpus.len())
        .filter(|n| *n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(std::num::NonZeroUsize::get));
    let cores = System::physical_core_count().ok().filter(|n| *n > 0).or(logical).and_then(|n| u32::try_from(n).ok());
    let ram = system.as_ref().map(System::total_memory).filter(|bytes| *bytes > 0);
    (brand, cores, ram)
}

/// "Debian GNU/Linux 12" on Linux (distribution name and version); sysinfo's long form elsewhere
/// ("macOS 15.1.1 Sequoia", "Windows 11 Pro"), whose Linux form would add a redundant "Linux (…)".
fn os_name() -> Option<String> {
    let short = || match (System::name().ok(), System::os_version().ok()) {
        (Some(name), Some(version)) => Some(format!("{name} {version}")),
        (Some(name), None) => Some(name),
        _ => None,
    };
    let os = if cfg!(target_os = "linux") { short() } else { System::long_os_version().ok().or_else(short) };
    os.map(|os| os.trim().to_owned()).filter(|os| !os.is_empty()).or_else(|| Some(std::env::consts::OS.to_owned()))
}

/// Every GPU from every source, merged by vendor so no card is listed twice.
fn gather_gpus(cpu: Option<&str>, ram_gib: Option<f64>) -> Vec<(Vendor, GpuSpec)> {
    let mut found = guarded("sysinfo GPUs", sysinfo_gpus).unwrap_or_default();
    // sysinfo lists NVIDIA cards only through their DRM device plus its own NVML load; a card
    // without a DRM device (no nvidia-drm) is only visible to NVML.
    if !found.iter().any(|(vendor, _)| *vendor == Vendor::Nvidia) {
        let nvidia = guarded("NVML GPUs", nvml_gpus).unwrap_or_default();
        found.extend(nvidia.into_iter().map(|gpu| (Vendor::Nvidia, gpu)));
    }
    if cfg!(target_os = "linux") {
        for (vendor, gpu) in
            guarded("DRM sysfs GPUs", || drm::drm_gpus_with_vendor(Path::new(SYS_ROOT))).unwrap_or_default()
        {
            if !found.iter().any(|(known, _)| *known == vendor) {
                found.push((vendor, gpu));
            }
        }
    }
    if cfg!(all(target_os = "macos", target_arch = "aarch64")) {
        apply_unified_memory(&mut found, cpu, ram_gib);
    }
    found
}

fn sysinfo_gpus() -> Vec<(Vendor, GpuSpec)> {
    let gpus = match sysinfo::Gpus::new_with_refreshed_list() {
        Ok(gpus) => gpus,
        Err(error) => {
            debug!(%error, "sysinfo could not list GPUs");
            return Vec::new();
        }
    };
    gpus.iter()
        .map(|gpu| {
            let vendor_name = gpu.vendor().unwrap_or_default();
            let vendor = match Vendor::from_name(vendor_name) {
                Vendor::Other => Vendor::from_name(gpu.model().unwrap_or_default()),
                vendor => vendor,
            };
            let vram = gpu.total_memory().filter(|bytes| *bytes > 0).map(bytes_to_gib);
            (vendor, GpuSpec { name: gpu_name(vendor, vendor_name, gpu.model()), vram })
        })
        .collect()
}

/// Apple Silicon has no VRAM of its own: the GPU uses the unified memory, which is what a model
/// can be loaded into, so that is what we report (sysinfo gives `None` there). Called only on
/// macOS aarch64, but compiled everywhere so it is type-checked and tested on Linux CI.
fn apply_unified_memory(gpus: &mut Vec<(Vendor, GpuSpec)>, cpu: Option<&str>, ram_gib: Option<f64>) {
    let Some(ram) = ram_gib else { return };
    if gpus.is_empty() {
        let name = match cpu {
            Some(chip) if chip.starts_with("Apple") => format!("{chip} GPU"),
            _ => "Apple GPU".to_owned(),
        };
        gpus.push((Vendor::Apple, GpuSpec { name, vram: None }));
    }
    for (_, gpu) in gpus.iter_mut() {
        if gpu.vram.is_none() {
            gpu.vram = Some(ram);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(name: &str, vram: Option<f64>) -> GpuSpec {
        GpuSpec { name: name.into(), vram }
    }

    #[test]
    fn gib_rounds_to_one_decimal() {
        assert_eq!(bytes_to_gib(17_163_091_968), 16.0);
        assert_eq!(bytes_to_gib(8 * 1024 * 1024 * 1024), 8.0);
        assert_eq!(bytes_to_gib(8_300_000_000), 7.7);
        assert_eq!(bytes_to_gib(0), 0.0);
    }

    #[test]
    fn main_gpu_has_the_most_vram_first_on_ties() {
        assert_eq!(main_gpu(&[]), None);
        let gpus = [gpu("igpu", None), gpu("small", Some(8.0)), gpu("big", Some(24.0)), gpu("big2", Some(24.0))];
        assert_eq!(main_gpu(&gpus).map(|g| g.name.as_str()), Some("big"));
        let unknown = [gpu("a", None), gpu("b", None)];
        assert_eq!(main_gpu(&unknown).map(|g| g.name.as_str()), Some("a"));
    }

    #[test]
    fn names_carry_the_vendor() {
        assert_eq!(
            gpu_name(Vendor::Amd, "Advanced Micro Devices, Inc. [AMD/ATI]", Some("Navi 21 [Radeon RX 6800]")),
            "AMD Navi 21 [Radeon RX 6800]"
        );
        assert_eq!(gpu_name(Vendor::Nvidia, "", Some("NVIDIA GeForce RTX 4090")), "NVIDIA GeForce RTX 4090");
        assert_eq!(gpu_name(Vendor::Nvidia, "", Some("GeForce  GTX 1080 ")), "NVIDIA GeForce GTX 1080");
        assert_eq!(gpu_name(Vendor::Intel, "Intel Corporation", None), "Intel GPU");
        assert_eq!(gpu_name(Vendor::Other, "Matrox", None), "Matrox GPU");
        assert_eq!(gpu_name(Vendor::Other, "", Some("  ")), "GPU");
        assert_eq!(Vendor::from_name("Advanced Micro Devices, Inc. [AMD/ATI]"), Vendor::Amd);
        assert_eq!(Vendor::from_name("NVIDIA Corporation"), Vendor::Nvidia);
        assert_eq!(Vendor::from_name("Apple Inc."), Vendor::Apple);
        assert_eq!(Vendor::from_name("Red Hat, Inc."), Vendor::Other);
    }

    #[test]
    fn apple_silicon_reports_unified_memory() {
        let mut found = vec![(Vendor::Apple, gpu("Apple M2 Pro", None))];
        apply_unified_memory(&mut found, Some("Apple M2 Pro"), Some(32.0));
        assert_eq!(found[0].1, gpu("Apple M2 Pro", Some(32.0)));

        let mut none = Vec::new();
        apply_unified_memory(&mut none, Some("Apple M3"), Some(16.0));
        assert_eq!(none[0].1, gpu("Apple M3 GPU", Some(16.0)));

        let mut unknown_ram = Vec::new();
        apply_unified_memory(&mut unknown_ram, Some("Apple M3"), None);
        assert!(unknown_ram.is_empty());
    }

    #[test]
    fn summary_lines() {
        let rows = summary(&MachineSpecs::default());
        assert_eq!(rows.last(), Some(&("GPU".to_owned(), "no GPU found".to_owned())));
        assert!(rows.contains(&("RAM".to_owned(), "unknown".to_owned())));

        let specs = MachineSpecs {
            cpu: Some("AMD Ryzen 9 7950X".into()),
            cpu_cores: Some(16),
            ram: Some(62.5),
            os: Some("Debian GNU/Linux 12".into()),
            gpus: Some(vec![gpu("AMD Radeon RX 6800 XT", Some(16.0)), gpu("Intel GPU 0x46a6", None)]),
            ..Default::default()
        };
        let rows = summary(&specs);
        let value = |label: &str| rows.iter().filter(|(l, _)| l == label).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(value("CPU"), ["AMD Ryzen 9 7950X"]);
        assert_eq!(value("Cores"), ["16"]);
        assert_eq!(value("RAM"), ["62.5 GiB"]);
        assert_eq!(value("GPU"), ["AMD Radeon RX 6800 XT (16 GiB VRAM)", "Intel GPU 0x46a6"]);

        // The seed's shape: only `gpu` and `vram`.
        let seed = MachineSpecs { gpu: Some("NVIDIA RTX 4090".into()), vram: Some(24.0), ..Default::default() };
        assert!(summary(&seed).contains(&("GPU".to_owned(), "NVIDIA RTX 4090 (24 GiB VRAM)".to_owned())));
    }
}
