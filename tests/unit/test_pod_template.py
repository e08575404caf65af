"""Unit test: deploy/kubernetes/pod_template.yaml is a pod the KubernetesExecutor can use for these tasks.

No cluster here: the file is parsed and checked against what the KubernetesExecutor requires
(a Pod whose task container is named ``base``) and what the tasks need (docs/scaling.md): memory
requested and capped alike, the spool (TMPDIR) on an emptyDir with a size limit, and that limit
within the container's ephemeral-storage limit, which must cover what it requests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
POD_TEMPLATE = REPO / "deploy" / "kubernetes" / "pod_template.yaml"
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(value: str) -> int:
    """A Kubernetes quantity of bytes (``512Mi``, ``4Gi``, ``1G``, ``1000``) as an int."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(value))
    assert match, f"not a byte quantity: {value!r}"
    return int(match.group(1)) * _UNITS[match.group(2)]


@pytest.fixture(scope="module")
def pod() -> dict:
    return yaml.safe_load(POD_TEMPLATE.read_text())


@pytest.fixture(scope="module")
def base(pod) -> dict:
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    assert "base" in containers, "the KubernetesExecutor runs the task in the container named 'base'"
    return containers["base"]


def test_quantities_parse_as_kubernetes_reads_them():
    assert quantity_bytes("512Mi") == 512 * 2**20
    assert quantity_bytes("1G") == 10**9
    with pytest.raises(AssertionError):
        quantity_bytes("1.5Gi")


def test_it_is_a_pod_that_airflow_retries_rather_than_kubernetes(pod):
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    assert pod["spec"]["restartPolicy"] == "Never"


def test_the_image_is_the_one_docker_compose_builds(base):
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    assert base["image"] == compose["x-airflow-common"]["image"]


def test_memory_is_requested_and_capped_alike(base):
    resources = base["resources"]
    request = quantity_bytes(resources["requests"]["memory"])
    assert quantity_bytes(resources["limits"]["memory"]) == request, "a pod evicted for memory loses its task"
    assert request >= 512 * 2**20


def test_the_spool_is_an_emptydir_within_the_ephemeral_storage_limit(pod, base):
    env = {e["name"]: e.get("value") for e in base.get("env", [])}
    mounts = {m["mountPath"]: m["name"] for m in base["volumeMounts"]}
    assert env.get("TMPDIR") in mounts, "TMPDIR (where spool files go) must be a mounted volume"
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    spool = volumes[mounts[env["TMPDIR"]]]
    assert "emptyDir" in spool, "the spool is the pod's own disk, shared with no other task"
    size_limit = quantity_bytes(spool["emptyDir"]["sizeLimit"])
    requests, limits = base["resources"]["requests"], base["resources"]["limits"]
    assert quantity_bytes(requests["ephemeral-storage"]) <= quantity_bytes(limits["ephemeral-storage"])
    assert size_limit <= quantity_bytes(limits["ephemeral-storage"]), "the spool limit must fit the pod's"


def test_the_sizing_doc_points_at_it():
    assert "deploy/kubernetes/pod_template.yaml" in (REPO / "docs" / "scaling.md").read_text()
