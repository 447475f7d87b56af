//! Generates bindings to the system DPDK with bindgen and compiles the C wrappers of its
//! static inline functions (rx/tx burst, mbuf alloc/free, ring bursts) with cc.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .expect("pkg-config is needed to find DPDK (apt-get install pkg-config)");
    if !out.status.success() {
        panic!(
            "pkg-config could not find libdpdk (apt-get install libdpdk-dev): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `-include rte_config.h` is two words that must stay in order; splitting on whitespace keeps it.
    String::from_utf8(out.stdout)
        .expect("pkg-config output is UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    for f in ["wrapper.h", "shim.h", "shim.c", "build.rs"] {
        println!("cargo:rerun-if-changed={f}");
    }

    let version = pkg_config(&["--modversion"]);
    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);
    println!(
        "cargo:rustc-env=PMDSWITCH_DPDK_BUILD_VERSION={}",
        version.join(" ")
    );

    // net_vhost's own API (queue-state events, a port's vhost device id) lives in the driver,
    // which pkg-config does not list: the same file the EAL loads as a plugin, so linking it
    // loads it once.
    println!("cargo:rustc-link-lib=dylib=rte_net_vhost");
    for flag in &libs {
        if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        } else if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        }
    }

    let wrapper = manifest.join("wrapper.h");
    let extern_c = out_dir.join("dpdk_static_fns");
    let bindings = bindgen::Builder::default()
        .header(wrapper.to_str().unwrap())
        .clang_args(&cflags)
        .clang_arg(format!("-I{}", manifest.display()))
        .allowlist_function("rte_.*")
        .allowlist_function("pmdswitch_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        // Packed structs that hold aligned ones: Rust cannot express them, and nothing here reads them.
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_.*")
        .derive_debug(false)
        .derive_default(true)
        .layout_tests(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&extern_c)
        .generate()
        .expect("bindgen failed on the DPDK headers");
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .expect("writing bindings.rs");

    let mut build = cc::Build::new();
    build
        .file(extern_c.with_extension("c"))
        .file(manifest.join("shim.c"))
        .include(&manifest)
        .warnings(false)
        .opt_level(3);
    let mut it = cflags.iter();
    while let Some(f) = it.next() {
        if f == "-include" {
            if let Some(h) = it.next() {
                build.flag("-include").flag(h);
            }
        } else {
            build.flag(f);
        }
    }
    build.compile("dpdk_shim");
}
