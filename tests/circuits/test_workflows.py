"""The circuit workflows from Python give exactly the tables and summary the commands write."""

import json

import pytest
from pandas.testing import assert_frame_equal
from typer.testing import CliRunner

from circuits import sae_identification
from circuits.circuit_analysis import CircuitConfig, analyse_circuit
from circuits.overlap_repair import OverlapConfig, overlap_and_repair
from circuits.sae_circuits import SAECircuitConfig
from circuits.sae_identification import identify_circuit
from circuits.tasks import ioi, ioi_templates
from interp.cli import app
from interp.errors import InputError
from interp.heads import HeadSet
from interp.models import load_model
from interp.runs import run_identity
from tests.circuits.word_model import saved_words_tiny
from tests.stops import Stop, count_items, logged, stop_after

runner = CliRunner()


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    folder = saved_words_tiny(tmp_path_factory.mktemp("words") / "model")
    return folder, load_model(str(folder))


def _written(words, tmp_path, argv):
    """Run `interp <argv>` on the word model; its folder."""
    out = tmp_path / "out"
    result = runner.invoke(app, [*argv, "--model", str(words[0]), "--out", str(out), "--no-static"])
    assert result.exit_code == 0, result.output
    return out


def _stamped(provenance):
    """The provenance but its time stamp (the two runs differ only in when they ran)."""
    return {k: v for k, v in provenance.to_dict().items() if k != "created"}


def _assert_written(result, out):
    """Every table of the result is in the folder, equal, and no other; the same summary."""
    tables = result.tables()
    on_disk = {str(p.relative_to(out).with_suffix("")) for p in out.rglob("*.parquet")}
    assert on_disk == set(tables)
    for name, table in tables.items():
        saved = type(table).load(out / f"{name}.parquet")
        assert saved.data.equals(table.data), name
        assert _stamped(saved.provenance) == _stamped(table.provenance), name
    assert json.loads((out / "summary.json").read_text()) == result.summary


def test_circuit_analysis_is_what_circuit_ioi_writes(words, tmp_path):
    out = _written(words, tmp_path, ["circuit", "ioi", "--n", "6", "--patching", "both"])
    model = words[1]
    heldout = ioi(model, 6, templates=ioi_templates("heldout"), seed=0)
    result = analyse_circuit(
        model, ioi(model, 6, seed=0), CircuitConfig(patching="both"), check=heldout
    )
    assert {"ioi_attribution_patching", "ioi_check_faithfulness"} <= set(result.tables())
    _assert_written(result, out)


def test_a_circuit_analysis_stopped_mid_discovery_resumes_after_its_finished_stages(
    words, tmp_path, monkeypatch
):
    import circuits.discovery

    model, config = words[1], CircuitConfig(patching="none", per_stage=2)  # 2 stages run
    task = ioi(model, 6, seed=0)

    def stop_in_the_second_stage(_step: str, finished: int, _total: int) -> None:
        if finished == 2:  # inside the second stage's path patching, before it is logged
            raise Stop

    with pytest.raises(Stop):
        analyse_circuit(model, task, config, progress=stop_in_the_second_stage, folder=tmp_path)
    stages = count_items(monkeypatch, circuits.discovery, "path_patching")
    resumed = analyse_circuit(model, task, config, folder=tmp_path)
    whole = analyse_circuit(model, task, config)
    ran = whole.discovery.scores.data["stage"].nunique()
    assert ran >= 2 and len(stages) == 2 * ran - 1  # resumed: the first stage came logged
    assert resumed.discovery.scores.data.equals(whole.discovery.scores.data)
    assert resumed.summary == whole.summary
    with pytest.raises(InputError, match="another"):  # another task's folder is refused
        analyse_circuit(model, ioi(model, 6, seed=1), config, folder=tmp_path)


def test_overlap_and_repair_is_what_circuit_overlap_writes(words, tmp_path):
    argv = ["circuit", "overlap", "--n", "6", "--repair-n", "6", "--repair", "L1H0,L1H3"]
    out = _written(words, tmp_path, [*argv, "--n-boot", "50", "--random-controls", "1"])
    config = OverlapConfig(n=6, repair_n=6, repair=("L1H0", "L1H3"), n_boot=50, random_controls=1)
    result = overlap_and_repair(words[1], config)
    assert {"reuse", "repair/effects", "repair_random_0/per_item"} <= set(result.tables())
    _assert_written(result, out)


def test_identify_circuit_is_what_circuit_sae_writes(words, tmp_path):
    out = _written(
        words, tmp_path, ["circuit", "sae", "--n", "6", "--epochs", "20", "--seeds", "2"]
    )
    model = words[1]
    result = identify_circuit(model, ioi(model, 6, seed=0), SAECircuitConfig(epochs=20), seeds=2)
    assert result.discovered is not None and len(result.aucs) == 2
    _assert_written(result, out)


def test_identify_circuit_resumes_at_the_first_seed_a_stopped_run_lacks(
    words, tmp_path, monkeypatch
):
    model = words[1]
    task = ioi(model, 6, seed=0)
    config = SAECircuitConfig(epochs=20, sparsity=0.0)  # no L1: the seeds' scores differ
    reference = HeadSet([(0, 0), (1, 1)])
    whole = identify_circuit(model, task, config, seeds=3, reference=reference)
    stop = stop_after(1)

    def stop_in_seeds(stage: str, done: int, total: int) -> None:
        if stage == "SAE seeds":
            stop(done, total)

    with pytest.raises(Stop):
        identify_circuit(
            model,
            task,
            config,
            seeds=3,
            reference=reference,
            progress=stop_in_seeds,
            folder=tmp_path,
        )
    assert logged(tmp_path) == 1
    scored = count_items(monkeypatch, sae_identification, "_seed_rows", arg=4)
    resumed = identify_circuit(model, task, config, seeds=3, reference=reference, folder=tmp_path)
    assert scored == [1, 1] and logged(tmp_path) == 3  # seed 0 came from the log
    assert resumed.summary == whole.summary
    by_seed = whole.per_seed.data.pivot(index="label", columns="seed", values="score")
    assert not by_seed[0].equals(by_seed[1])  # each seed scores the heads its own way
    for name, table in whole.tables().items():
        assert_frame_equal(resumed.tables()[name].data, table.data, check_exact=True)
        assert run_identity(resumed.tables()[name].provenance) == run_identity(table.provenance)
    assert_frame_equal(resumed.curves, whole.curves, check_exact=True)


def test_overlap_repairs_stopped_from_python_resume_to_one_run(words, tmp_path, monkeypatch):
    import circuits.repair
    from tests.stops import Stop, count_items

    config = OverlapConfig(n=6, repair_n=6, repair=("L1H0", "L1H3"), n_boot=50, random_controls=1)

    def stop_after_first_arm(step: str, done: int, total: int) -> None:
        if step == "repair" and done == 1:
            raise Stop

    with pytest.raises(Stop):
        overlap_and_repair(words[1], config, progress=stop_after_first_arm, folder=tmp_path)
    forwards = count_items(monkeypatch, circuits.repair, "last_logits")
    resumed = overlap_and_repair(words[1], config, folder=tmp_path)
    assert len(forwards) == 2  # the second arm's identity and repair; the first came logged
    whole = overlap_and_repair(words[1], config)
    assert len(forwards) == 6
    for arm in ("chosen", "random_0"):
        for name in ("table", "per_item"):
            got, want = getattr(resumed.repairs[arm], name), getattr(whole.repairs[arm], name)
            assert got.data.equals(want.data), (arm, name)
    assert resumed.summary == whole.summary
