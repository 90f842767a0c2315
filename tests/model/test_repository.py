"""The model repository on disk: what counts as a model and a version, and what is skipped."""

from app.model.repository import Repository


def test_only_positive_integer_folders_with_a_model_file_are_versions(tmp_path):
    speech = tmp_path / "speech"
    for name in ("1", "12", "0", "01", "²", "v3", "7"):
        (speech / name).mkdir(parents=True)
        if name != "7":  # a version being copied in: no model.keras yet
            (speech / name / "model.keras").write_bytes(b"PK")
    (tmp_path / ".hidden" / "1").mkdir(parents=True)
    (tmp_path / ".hidden" / "1" / "model.keras").write_bytes(b"PK")
    (tmp_path / "notes.txt").write_text("not a model")
    found = Repository(root=tmp_path).scan()
    assert list(found) == ["speech"] and sorted(found["speech"]) == [1, 12]
    assert found["speech"][12].location == str(speech / "12" / "model.keras")


def test_one_model_is_a_repository_of_one_version():
    assert {name: list(v) for name, v in Repository(single="seed").scan().items()} == {"seed": [1]}
