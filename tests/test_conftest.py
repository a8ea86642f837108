"""The suite's own set-up (tests/conftest.py): every test that uses the real weights, through the weights fixture or a
fixture built on it, is marked slow, so that `make test-fast` (`-m "not slow"`) leaves it out. Checked on the tests
this session collected: under `make test` all of them; under `make test-fast` an unmarked one would still be here."""


def test_every_collected_test_that_uses_the_real_weights_is_marked_slow(request):
    items = request.session.items
    assert request.node in items
    using_weights = [item for item in items if "weights" in item.fixturenames]
    unmarked = [item.nodeid for item in using_weights if item.get_closest_marker("slow") is None]
    assert not unmarked, f"tests that use the real weights but are not marked slow: {unmarked}"
