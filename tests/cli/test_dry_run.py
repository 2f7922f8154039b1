"""`ffctl deploy --dry-run`: the objects a first deploy makes, with no server at all."""

from __future__ import annotations

from pathlib import Path

import yaml

from forestflow_control_plane.knative.admission import check_all

from .conftest import Ffctl, model_spec, write_model


def test_dry_run_prints_objects_a_cluster_accepts_without_a_server(
    ffctl: Ffctl, tmp_path: Path
) -> None:
    spec = model_spec(tmp_path)
    spec["routing"] = {"sticky_header": "x-user-id"}
    done = ffctl("deploy", str(write_model(tmp_path, spec)), "--dry-run", "--image", "img:1",
                 env={"FF_SERVER": "http://127.0.0.1:9"})  # nothing listens there
    assert done.exit_code == 0, done.output
    objects = list(yaml.safe_load_all(done.stdout))
    assert [o["kind"] for o in objects] == ["Service", "Route"]
    check_all(objects)
    service, route = objects
    assert service["spec"]["template"]["spec"]["containers"][0]["image"] == "img:1"
    revision = service["spec"]["template"]["metadata"]["name"]
    assert route["spec"]["traffic"] == [{"revisionName": revision, "percent": 100, "tag": "v1"}]
    assert route["metadata"]["annotations"] == {"forestflow.dev/sticky-header": "x-user-id"}
    assert "kn " not in done.stdout


def test_dry_run_for_knative_adds_the_kn_commands_as_comments(
    ffctl: Ffctl, tmp_path: Path
) -> None:
    path = write_model(tmp_path, model_spec(tmp_path))
    done = ffctl("deploy", str(path), "--dry-run", "--platform", "knative")
    assert done.exit_code == 0, done.output
    assert "# kn service create ff-mlp-v1 --force" in done.stdout
    assert "# kubectl apply --server-side --field-manager=forestflow" in done.stdout
    assert [o["kind"] for o in yaml.safe_load_all(done.stdout)] == ["Service", "Route"]


def test_dry_run_of_a_shadow_has_no_route(ffctl: Ffctl, tmp_path: Path) -> None:
    spec = model_spec(tmp_path)
    spec["shadow"] = True
    done = ffctl("deploy", str(write_model(tmp_path, spec)), "--dry-run")
    assert done.exit_code == 0, done.output
    assert [o["kind"] for o in yaml.safe_load_all(done.stdout)] == ["Service"]


def test_dry_run_of_a_bad_file_names_the_field(ffctl: Ffctl, tmp_path: Path) -> None:
    spec = model_spec(tmp_path)
    spec["variant"]["batching"] = {"max_batch_size": 0}
    done = ffctl("deploy", str(write_model(tmp_path, spec)), "--dry-run")
    assert done.exit_code == 2
    assert "variant.batching.max_batch_size" in done.output
