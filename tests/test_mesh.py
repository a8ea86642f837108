"""MeSH labels (scraper/mesh.py): a report's major terms give the classes it belongs to, by whole term, case and
spacing aside."""

from scraper import mesh


def test_a_class_matches_a_whole_major_term_whatever_its_case_and_spacing():
    assert mesh.classes_of(["Nodule/lung/upper lobe/right"], ["normal", "nodule"]) == ["nodule"]
    assert mesh.classes_of(["NORMAL"], ["normal", "nodule"]) == ["normal"]
    assert mesh.classes_of(["normal/lung"], ["normal"]) == []
    assert mesh.classes_of(["Nodules/multiple", "Opacity/nodule"], ["nodule"]) == []
    assert mesh.classes_of(["Calcified  Granuloma/lung"], ["calcified granuloma"]) == ["calcified granuloma"]
    assert mesh.classes_of(["normal", "Nodule"], ["normal", "nodule"]) == ["normal", "nodule"]

