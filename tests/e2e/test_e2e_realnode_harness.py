"""The real node's harness without starting it (runs everywhere): what its configuration files
say (each line that keeps the machine's own state untouched), its certificates, the record of
what it made and its removal, and the skip line."""
from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import realnode
from tests.e2e.controlplane import SERVICE_CIDR, make_pki


@pytest.fixture()
def layout(tmp_path: Path) -> realnode.Layout:
    return realnode.Layout(tmp_path / "run", tmp_path / "bin", "/llmss-e2e-node-1")


def test_containerd_config_keeps_everything_in_the_run_directory(layout: realnode.Layout) -> None:
    config = tomllib.loads(realnode.containerd_config(layout))
    assert config["version"] == 3
    for key in ("root", "state"):
        assert Path(config[key]).is_relative_to(layout.run), key
    assert config["grpc"]["address"] == str(layout.socket) and config["ttrpc"]["address"].startswith(str(layout.socket))
    # NRI's socket, /opt/containerd and CDI's directories would be made on the machine.
    assert {"io.containerd.nri.v1.nri", "io.containerd.internal.v1.opt"} <= set(config["disabled_plugins"])
    plugins = config["plugins"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True  # the machine strips CAP_SYS_RESOURCE
    assert runtime["netns_mounts_under_state_dir"] is True and runtime["enable_cdi"] is False
    assert Path(runtime["cni"]["conf_dir"]).is_relative_to(layout.run)
    assert runtime["cni"]["bin_dirs"] == [str(layout.bins / "cni")]
    for handler in ("runc", "runsc"):  # runsc: the gvisor RuntimeClass, on runc here
        options = runtime["containerd"]["runtimes"][handler]["options"]
        assert options == {"BinaryName": str(layout.bins / "runc"), "SystemdCgroup": False}
    assert plugins["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == realnode.PAUSE_IMAGE
    assert plugins["io.containerd.grpc.v1.cri"]["stream_server_address"] == "127.0.0.1"


def test_the_pod_network_has_no_way_off_the_machine(layout: realnode.Layout) -> None:
    (bridge,) = realnode.cni_config(layout)["plugins"]
    assert bridge["type"] == "bridge" and bridge["bridge"] == realnode.POD_BRIDGE
    # isGateway turns on IP forwarding; ipMasq would NAT pods to the outside.
    assert bridge["isGateway"] is False and bridge["isDefaultGateway"] is False and bridge["ipMasq"] is False
    ipam = bridge["ipam"]
    assert Path(ipam["dataDir"]).is_relative_to(layout.run)
    assert ipam["routes"] == [{"dst": SERVICE_CIDR}]  # no 0.0.0.0/0
    (subnet,) = ipam["ranges"][0]
    net = ipaddress.ip_network(subnet["subnet"])
    assert net.is_private and ipaddress.ip_address(subnet["gateway"]) in net and ipaddress.ip_address(subnet["rangeStart"]) in net
    assert not net.overlaps(ipaddress.ip_network(SERVICE_CIDR)) and ipaddress.ip_address(realnode.NODE_IP) not in net


def test_the_guard_table_keeps_routed_traffic_on_the_pod_bridge() -> None:
    rules = realnode.guard_rules()
    assert "table inet llmss-node" in rules and "hook forward" in rules and "policy accept" in rules
    assert f'iifname "{realnode.POD_BRIDGE}" oifname != "{realnode.POD_BRIDGE}" counter drop' in rules
    assert f'oifname "{realnode.POD_BRIDGE}" iifname != "{realnode.POD_BRIDGE}" counter drop' in rules
    assert list(realnode.GUARD_TABLE) in [list(t) for t in realnode.NFT_TABLES]


def test_kubelet_config_checks_host_settings_instead_of_writing_them(tmp_path: Path, layout: realnode.Layout) -> None:
    pki = make_pki(tmp_path / "pki")
    config = realnode.kubelet_config(layout, pki, (tmp_path / "s.crt", tmp_path / "s.key"), 10250, 10248)
    assert config["protectKernelDefaults"] is True and config["makeIPTablesUtilChains"] is False
    assert (config["cgroupDriver"], config["cgroupRoot"], config["failCgroupV1"], config["failSwapOn"]) == \
        ("cgroupfs", layout.cgroup_root, False, False)
    assert config["address"] == realnode.NODE_IP and config["healthzBindAddress"] == "127.0.0.1" and config["readOnlyPort"] == 0
    auth = config["authentication"]
    assert auth["anonymous"]["enabled"] is False and auth["x509"]["clientCAFile"] == str(pki.ca_cert)
    assert config["registerWithTaints"] == [realnode.TAINT]
    for key in ("podLogsDir", "volumePluginDir"):
        assert Path(config[key]).is_relative_to(layout.run), key
    assert config["containerRuntimeEndpoint"] == f"unix://{layout.socket}"
    assert ipaddress.ip_address(config["clusterDNS"][0]) in ipaddress.ip_network(SERVICE_CIDR)
    # Exactly the values protectKernelDefaults checks are the copies bound over /proc/sys.
    assert realnode.KERNEL_DEFAULTS["vm/overcommit_memory"] == "1" and realnode.KERNEL_DEFAULTS["kernel/panic"] == "10"


def test_kube_proxy_leaves_conntrack_alone_and_listens_on_loopback(tmp_path: Path) -> None:
    config = realnode.kube_proxy_config(tmp_path / "kubeconfig", 1, 2)
    assert config["mode"] == "nftables" and config["hostnameOverride"] == realnode.NODE_NAME
    assert all(v in (0, "0s") for v in config["conntrack"].values())
    assert config["healthzBindAddress"].startswith("127.0.0.1:") and config["metricsBindAddress"].startswith("127.0.0.1:")
    assert config["nodePortAddresses"] == [f"{realnode.NODE_IP}/32"]


def test_node_certificates_come_from_the_cluster_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert_path, key_path = realnode.issue_certificate(pki, tmp_path, "client", "system:node:n", "system:nodes", server=False)
    client = x509.load_pem_x509_certificate(cert_path.read_bytes())
    client.verify_directly_issued_by(ca)
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n"
    assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:nodes"
    assert ExtendedKeyUsageOID.CLIENT_AUTH in client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    cert_path, _ = realnode.issue_certificate(pki, tmp_path, "serving", "n", None, server=True, ips=[realnode.NODE_IP], dns=["n"])
    serving = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == [realnode.NODE_IP]


def test_what_a_run_made_is_recorded_and_removed(tmp_path: Path) -> None:
    run, empty, full = tmp_path / "llmss-node-x", tmp_path / "mount-point", tmp_path / "not-empty"
    for d in (run / "kubelet", empty, full):
        d.mkdir(parents=True)
    (full / "file").write_text("someone's")
    made = realnode.Made(pid=1, run=str(run), mount_points=[str(empty), str(full)], links=["llmss-no-such-link"])
    again = realnode.Made.from_json(made.to_json())
    assert again == made and realnode.Made.from_json("") is None and realnode.Made.from_json("{") is None
    left = realnode.remove_made(again)
    assert not run.exists() and not empty.exists()
    assert full.exists() and len(left) == 1 and str(full) in left[0], left  # only empty mount points go


def test_skip_reason_names_the_missing_node_binaries(tmp_path: Path) -> None:
    (tmp_path / "kubelet").write_text("#!/bin/sh\n")
    (tmp_path / "kubelet").chmod(0o755)
    reason = realnode.skip_reason(tmp_path)
    assert reason is not None and "containerd" in reason and "runc" in reason and "cni/bridge" in reason
    assert "kubelet," not in reason and "docs/e2e.md" in reason
    assert set(realnode.optional_missing(tmp_path)) == {"kube-proxy", "kube-network-policies"}


def test_a_probe_pod_lands_only_on_the_real_node_and_is_restricted() -> None:
    pod = realnode.probe_pod("p", "ns", labels={"a": "b"})
    spec = pod["spec"]
    assert spec["nodeSelector"] == {realnode.LABEL_KEY: realnode.LABEL_VALUE}
    assert spec["tolerations"] == [{**realnode.TAINT, "operator": "Equal"}]
    (container,) = spec["containers"]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]} and container["imagePullPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["hostUsers"] is False
    json.dumps(pod)

