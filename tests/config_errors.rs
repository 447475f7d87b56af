//! Bad configuration stops start-up with a message that names the field or the port and says
//! what is allowed; nothing is left running.

use std::process::Command;

use pmdswitch_tests::*;

fn run_with(config: Option<&str>, ports: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin());
    cmd.arg("run");
    if let Some(text) = config {
        let f = dir.path().join("switch.toml");
        std::fs::write(&f, text).unwrap();
        cmd.arg("--config").arg(&f);
    }
    for p in ports {
        cmd.arg("--port").arg(p);
    }
    let eal = eal_args();
    cmd.arg("--duration").arg("1").arg("--").args(&eal);
    let out = cmd.output().unwrap();
    remove_runtime_dir(&eal);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_key_names_the_key_and_what_is_allowed() {
    let (code, err) = run_with(
        Some("[[ports]]\nname = \"vm1\"\ndevargs = \"net_null0\"\nspeeed = 10\n"),
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("switch.toml") && err.contains("speeed") && err.contains("devargs"),
        "{err}"
    );
}

#[test]
fn missing_devargs_is_named() {
    let (code, err) = run_with(Some("[[ports]]\nname = \"vm1\"\n"), &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("switch.toml")
            && err.contains("ports[0]")
            && err.contains("devargs")
            && err.contains("\"vm1\"")
            && err.contains("vhost_user"),
        "{err}"
    );
}

#[test]
fn duplicate_port_name_is_refused() {
    let (code, err) = run_with(
        Some("[[ports]]\nname = \"vm1\"\ndevargs = \"net_null0\"\n"),
        &["vm1=net_null1"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("\"vm1\" is already used"), "{err}");
}

#[test]
fn a_device_dpdk_cannot_probe_names_the_port() {
    require_hugepages();
    let (code, err) = run_with(None, &["ok=net_null0", "uplink=net_nosuchdriver0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("port \"uplink\"") && err.contains("net_nosuchdriver0"),
        "{err}"
    );
    assert!(err.contains("DPDK could not create the device"), "{err}");
    // A PCI address is never probed with --no-pci: the same clear error.
    let (code, err) = run_with(None, &["ok=net_null0", "pf=0000:3b:00.0"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("port \"pf\"") && err.contains("0000:3b:00.0"),
        "{err}"
    );
}

#[test]
fn bad_eal_arguments_are_reported() {
    require_hugepages();
    let out = Command::new(bin())
        .args([
            "run",
            "--port",
            "a=net_null0",
            "--duration",
            "1",
            "--",
            "--no-pci",
            "--in-memory",
            "--no-such-eal-flag",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("EAL initialisation failed"), "{err}");
}

#[test]
fn one_lcore_leaves_no_worker() {
    require_hugepages();
    let out = Command::new(bin())
        .args([
            "run",
            "--port",
            "a=net_null0",
            "--duration",
            "1",
            "--",
            "-l",
            "0",
            "--no-pci",
            "--in-memory",
            "--file-prefix",
        ])
        .arg(format!("pmdsw-test-onelcore-{}", std::process::id()))
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(format!(
        "/var/run/dpdk/pmdsw-test-onelcore-{}",
        std::process::id()
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no worker lcore") && err.contains("-l 0,1"),
        "{err}"
    );
}

/// A config with ports `a` (net_null0) and `b` (net_null1), each with its extra lines, after
/// `head`; asserts it stops start-up with status 2 and a message holding every one of `needles`.
fn refused(head: &str, a: &str, b: &str, needles: &[&str]) {
    let text = format!(
        "{head}\n[[ports]]\nname = \"vm-a\"\ndevargs = \"net_null0\"\n{a}\n\n\
         [[ports]]\nname = \"vm-b\"\ndevargs = \"net_null1\"\n{b}\n"
    );
    let (code, err) = run_with(Some(&text), &[]);
    assert_eq!(code, 2, "config:\n{text}\nstderr:\n{err}");
    for n in needles {
        assert!(
            err.contains(n),
            "no {n:?} in the message for:\n{text}\nstderr:\n{err}"
        );
    }
}

#[test]
fn vlan_0_and_4095_are_not_access_vlans() {
    for vid in [0, 4095] {
        refused(
            "",
            "",
            &format!("vlan_mode = \"access\"\nvlan = {vid}"),
            &["vm-b", "vlan", &vid.to_string()],
        );
    }
}

#[test]
fn a_trunk_list_with_a_duplicate_is_refused() {
    refused(
        "",
        "vlan_mode = \"trunk\"\ntrunks = [10, 20, 10]",
        "",
        &["vm-a", "trunks", "10"],
    );
}

#[test]
fn trunk_vlans_out_of_range_are_refused() {
    refused(
        "",
        "vlan_mode = \"trunk\"\ntrunks = [10, 4095]",
        "",
        &["vm-a", "trunks", "4095"],
    );
}

#[test]
fn two_uplinks_are_refused() {
    refused(
        "[bridge]\nmode = \"vepa\"\n",
        "role = \"uplink\"",
        "role = \"uplink\"",
        &["uplink", "vm-a", "vm-b"],
    );
}

#[test]
fn vepa_without_an_uplink_is_refused() {
    refused("[bridge]\nmode = \"vepa\"\n", "", "", &["vepa", "uplink"]);
}

#[test]
fn an_uplink_that_is_not_a_port_is_refused() {
    refused(
        "[bridge]\nmode = \"vepa\"\nuplink = \"nosuch\"\n",
        "",
        "",
        &["uplink", "nosuch"],
    );
}

#[test]
fn an_unknown_vlan_mode_names_the_choices() {
    refused(
        "",
        "vlan_mode = \"hybrid\"",
        "",
        &["vlan_mode", "hybrid", "access", "trunk"],
    );
}
