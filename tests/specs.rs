//! Machine specs: the DRM sysfs reader against the fixture trees in `tests/fixtures/` (AMD with
//! VRAM, Intel without, no DRM at all, and a tree of connectors and garbage), and `collect()` on
//! this machine, a CI VM with no GPU and no NVML: CPU, cores, RAM and OS, no GPU, no error, cached.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gambi::protocol::GpuSpec;
use gambi::specs;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join(name)
}

fn gpu(name: &str, vram: Option<f64>) -> GpuSpec {
    GpuSpec { name: name.to_owned(), vram }
}

#[test]
fn amd_card_reports_its_vram() {
    // mem_info_vram_total = 17163091968 bytes = 15.98 GiB, reported as 16.0.
    assert_eq!(specs::drm_gpus(&fixture("sys-amd")), [gpu("AMD GPU 0x73bf", Some(16.0))]);
}

#[test]
fn intel_card_without_vram_info() {
    assert_eq!(specs::drm_gpus(&fixture("sys-intel")), [gpu("Intel GPU 0x46a6", None)]);
}

#[test]
fn no_drm_tree_means_no_gpu() {
    assert_eq!(specs::drm_gpus(&fixture("sys-no-drm")), []);
    // A root that does not exist at all is no different.
    assert_eq!(specs::drm_gpus(&fixture("no-such-root")), []);
}

#[test]
fn connectors_and_garbage_are_skipped_or_tolerated() {
    // card0: named AMD with VRAM; card0-HDMI-A-1, card0-DP-1, renderD128: not cards; card1:
    // garbage vendor, skipped; card2: AMD with garbage everywhere else, kept without VRAM and with
    // the fallback name; card3: audio class, skipped; card5: no device/, skipped; card10: NVIDIA,
    // after card2 (numeric order, not lexicographic).
    assert_eq!(
        specs::drm_gpus(&fixture("sys-mixed")),
        [gpu("AMD Radeon RX 6800 XT", Some(16.0)), gpu("AMD GPU", None), gpu("NVIDIA GPU 0x2684", None)]
    );
}

#[test]
fn nvml_absent_is_no_gpu_not_an_error() {
    // This machine has no libnvidia-ml: an empty list, quickly, no panic.
    let started = Instant::now();
    assert_eq!(specs::nvml_gpus(), []);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn collect_reports_this_machine_and_caches() {
    let started = Instant::now();
    let first = specs::collect().await;
    let first_took = started.elapsed();
    assert!(first_took < Duration::from_secs(5), "first collect took {first_took:?}");

    assert!(first.cpu.as_deref().is_some_and(|cpu| !cpu.trim().is_empty()), "{first:?}");
    assert!(first.cpu_cores.is_some_and(|cores| cores > 0), "{first:?}");
    assert!(first.ram.is_some_and(|ram| ram > 0.0), "{first:?}");
    assert!(first.os.as_deref().is_some_and(|os| !os.is_empty()), "{first:?}");

    // The CI VM has neither a DRM tree nor NVML; where a machine has a GPU, this part is moot.
    let gpu_less = !Path::new("/sys/class/drm").exists() && specs::nvml_gpus().is_empty();
    if gpu_less {
        assert_eq!((&first.gpu, first.vram, &first.gpus), (&None, None, &None), "{first:?}");
        let rows = specs::summary(&first);
        assert!(rows.contains(&("GPU".to_owned(), "no GPU found".to_owned())), "{rows:?}");
    }

    let started = Instant::now();
    let second = specs::collect().await;
    assert!(started.elapsed() < Duration::from_millis(50), "cached call took {:?}", started.elapsed());
    assert_eq!(second, first);
    // The sync entry point shares the cache (run off the async threads, as it blocks).
    let blocking = tokio::task::spawn_blocking(specs::collect_blocking).await.unwrap();
    assert_eq!(blocking, first);
}

#[test]
fn collect_works_without_a_runtime() {
    // `collect()` polled by a non-tokio executor must not panic on `spawn_blocking`.
    let specs = futures_util::FutureExt::now_or_never(specs::collect());
    let specs = specs.expect("no await point without a runtime");
    assert!(specs.cpu_cores.is_some_and(|cores| cores > 0));
}

#[test]
fn specs_serialize_as_the_wire_says() {
    let specs = specs::collect_blocking();
    let json = serde_json::to_value(&specs).unwrap();
    assert!(json["ram"].is_number());
    assert!(json["cpuCores"].is_number());
    if specs.gpus.is_none() {
        assert!(json.get("gpus").is_none() && json.get("gpu").is_none());
    }
}
