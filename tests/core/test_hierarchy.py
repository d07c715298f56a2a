"""Names to sets of base classes: a small made-up hierarchy first, then the packaged WordNet data."""

from __future__ import annotations

import pytest

from vit_desktop.core.errors import VitDesktopError
from vit_desktop.core.labels.hierarchy import (
    ClassNameError,
    Hierarchy,
    load_imagenet_hierarchy,
    name_key,
)

# Readable names for the made-up node ids; ids look like wnids so they never read as lemmas.
ID = {name: f"n{i:08d}" for i, name in enumerate(
    ["entity", "animal", "dog", "beagle", "pug", "bird", "crane_bird", "goose", "device",
     "crane_machine", "measuring_instrument", "barometer", "musical_instrument", "grand_piano",
     "ocarina", "idea"])}

# Base classes in index order: 0 beagle, 1 pug, 2 crane (bird), 3 goose, 4 crane (machine),
# 5 barometer, 6 grand piano, 7 ocarina.
CLASSES = ["beagle", "pug", "crane_bird", "goose", "crane_machine", "barometer", "grand_piano", "ocarina"]


def tiny() -> Hierarchy:
    """Sense numbers follow the order below: crane.n.01 is the machine, instrument.n.01 measures."""
    edges = {
        "entity": (["entity"], []),
        "animal": (["animal", "beast"], ["entity"]),
        "dog": (["dog", "domestic_dog"], ["animal"]),
        "beagle": (["beagle"], ["dog"]),
        "pug": (["pug", "pug-dog"], ["dog"]),
        "bird": (["bird"], ["animal"]),
        "device": (["device"], ["entity"]),
        "crane_machine": (["crane"], ["device"]),
        "crane_bird": (["crane"], ["bird"]),
        "goose": (["goose"], ["bird"]),
        "measuring_instrument": (["measuring_instrument", "instrument"], ["device"]),
        "barometer": (["barometer"], ["measuring_instrument"]),
        "musical_instrument": (["musical_instrument", "instrument"], ["device"]),
        "grand_piano": (["grand_piano", "grand"], ["musical_instrument"]),
        "ocarina": (["ocarina", "sweet_potato"], ["musical_instrument"]),
        "idea": (["idea"], ["entity"]),
    }
    nodes = {ID[name]: (lemmas, [ID[p] for p in parents]) for name, (lemmas, parents) in edges.items()}
    glosses = {ID["crane_bird"]: "long-necked wading bird", ID["crane_machine"]: "lifts heavy objects"}
    return Hierarchy.from_edges([ID[c] for c in CLASSES], nodes, glosses=glosses, plurals={"geese": "goose"})


def resolved_node(h: Hierarchy, name: str) -> str:
    (node,) = h.resolve(name).nodes
    return node


# ------------------------------------------------------------------------------------------------
# A made-up hierarchy


def test_classes_under_a_node_are_the_base_classes_below_it() -> None:
    h = tiny()
    assert h.classes_under(ID["dog"]) == (0, 1)
    assert h.classes_under(ID["animal"]) == (0, 1, 2, 3)
    assert h.classes_under(ID["beagle"]) == (0,)  # a class is under itself
    assert h.classes_under(ID["entity"]) == tuple(range(8))
    assert h.classes_under(ID["idea"]) == ()
    assert h.node_ids == tuple(sorted(ID.values()))


def test_ancestors_run_from_the_class_up_to_the_root() -> None:
    h = tiny()
    assert h.ancestors(0) == (ID["beagle"], ID["dog"], ID["animal"], ID["entity"])
    assert h.ancestors(ID["grand_piano"]) == (ID["grand_piano"], ID["musical_instrument"], ID["device"], ID["entity"])


@pytest.mark.parametrize("name", ["dog", "Dog", "DOGS", " domestic-dog ", "domestic dogs", "Domestic_Dog"])
def test_names_ignore_case_separators_and_plurals(name: str) -> None:
    h = tiny()
    resolution = h.resolve(name)
    assert resolution.nodes == (ID["dog"],)
    assert resolution.classes == (0, 1)
    assert resolution.display == "dog.n.01"
    assert resolution.note is None


@pytest.mark.parametrize(("name", "node"), [
    ("geese", "goose"),  # irregular plural
    ("Grand Pianos", "grand_piano"),
    ("grand", "grand_piano"),  # any lemma of a node finds it
    ("pug dogs", "pug"),
    ("beasts", "animal"),
    ("sweet potatoes", "ocarina"),  # "es" only after "s" finds no lemma
])
def test_synonyms_and_plurals_find_their_node(name: str, node: str) -> None:
    assert resolved_node(tiny(), name) == ID[node]


def test_an_ambiguous_name_takes_wordnets_first_sense_unless_the_other_names_point_elsewhere() -> None:
    h = tiny()
    # Alone, "crane" is WordNet's commonest sense (the machine); among birds, the bird.
    assert h.resolve("crane").nodes == (ID["crane_machine"],)
    crane, goose = h.resolve_classes(["crane", "goose"])
    assert crane.nodes == (ID["crane_bird"],) and crane.classes == (2,)
    assert crane.notes and "goose" in crane.notes[0] and "crane.n.01" in crane.notes[0]
    crane, barometer = h.resolve_classes(["crane", "barometer"])
    assert crane.nodes == (ID["crane_machine"],)


def test_a_tie_goes_to_the_first_sense_and_the_note_names_the_other() -> None:
    resolution = tiny().resolve("cranes")
    assert resolution.nodes == (ID["crane_machine"],)
    assert resolution.note is not None
    assert "crane.n.02" in resolution.note and "wading bird" in resolution.note


def test_an_explicit_sense_or_node_id_picks_exactly_that_node() -> None:
    h = tiny()
    assert resolved_node(h, "crane.n.02") == ID["crane_bird"]
    assert resolved_node(h, "Crane.N.1") == ID["crane_machine"]
    assert resolved_node(h, "instrument.n.01") == ID["measuring_instrument"]
    assert h.resolve("crane.n.02").note is None
    assert resolved_node(h, ID["goose"]) == ID["goose"]
    with pytest.raises(ClassNameError, match=r"crane\.n\.03 .*crane\.n\.01, crane\.n\.02"):
        h.resolve("crane.n.03")


def test_an_unknown_name_is_an_error_that_suggests_near_names() -> None:
    h = tiny()
    with pytest.raises(ClassNameError, match="dgo.*nearest known names: dog") as caught:
        h.resolve("dgo")
    assert isinstance(caught.value, VitDesktopError)
    assert "\n" not in str(caught.value)
    with pytest.raises(ClassNameError, match="beagle"):
        h.resolve("beagel")
    with pytest.raises(ClassNameError, match="empty"):
        h.resolve("  ")


def test_a_name_with_no_class_under_it_is_an_error_and_never_suggested() -> None:
    h = tiny()
    with pytest.raises(ClassNameError, match="'idea'"):
        h.resolve("idea")
    with pytest.raises(ClassNameError) as caught:
        h.resolve("ideas")
    assert "idea," not in str(caught.value) and not str(caught.value).endswith("idea")


def test_a_broader_class_means_the_rest_of_it() -> None:
    animal, dog = tiny().resolve_classes(["animal", "dog"])
    assert (animal.name, animal.classes) == ("animal", (2, 3))
    assert (dog.name, dog.classes) == ("dog", (0, 1))
    assert any("other than 'dog'" in note for note in animal.notes)
    assert dog.notes == ()


def test_resolved_classes_keep_each_names_own_notes_and_order() -> None:
    dog, instrument, bird = tiny().resolve_classes(["dogs", "instrument", "bird"])
    assert [c.name for c in (dog, instrument, bird)] == ["dogs", "instrument", "bird"]
    assert bird.classes == (2, 3)
    assert instrument.classes == (6, 7) and instrument.notes and "instrument.n.01" in instrument.notes[0]


def test_two_names_for_the_same_classes_are_an_error() -> None:
    with pytest.raises(ClassNameError, match="'dog' and 'domestic dogs' both mean dog.n.01"):
        tiny().resolve_classes(["dog", "domestic dogs"])


def test_a_broad_class_with_nothing_left_is_an_error() -> None:
    with pytest.raises(ClassNameError, match="'dog' has no class of its own.*'beagle', 'pug'"):
        tiny().resolve_classes(["beagle", "pug", "dog"])


def test_malformed_data_is_refused() -> None:
    with pytest.raises(ValueError, match="cycle"):
        Hierarchy.from_edges(["a"], {"a": (["a"], ["b"]), "b": (["b"], ["a"])})
    with pytest.raises(ValueError, match="unknown parent"):
        Hierarchy.from_edges(["a"], {"a": (["a"], ["nowhere"])})


def test_name_key() -> None:
    assert name_key("  Musical--Instrument ") == name_key("musical_instrument") == "musical_instrument"
    assert name_key("St. Bernard") == "st_bernard"


# ------------------------------------------------------------------------------------------------
# The packaged ImageNet-1k hierarchy


def test_packaged_hierarchy_has_imagenets_classes_in_index_order() -> None:
    h = load_imagenet_hierarchy()
    assert h is load_imagenet_hierarchy()
    assert h.num_classes == 1000
    assert h.class_node(0) == "n01440764" and h.node_name("n01440764") == "tench.n.01"
    assert h.class_node(999) == "n15075141"
    assert h.classes_under("n02099601") == (207,)  # golden retriever


def test_dog_is_the_118_breeds() -> None:
    h = load_imagenet_hierarchy()
    dog = h.resolve("dogs")
    assert dog.display == "dog.n.01" and dog.nodes == ("n02084071",)
    assert len(dog.classes) == 118
    assert dog.classes == tuple(range(151, 269))  # ImageNet lists the breeds together
    assert h.resolve("n02084071").classes == dog.classes
    assert "n02084071" in h.ancestors(207)


def test_musical_instruments_by_their_plural() -> None:
    resolution = load_imagenet_hierarchy().resolve("Musical instruments")
    assert resolution.display == "musical_instrument.n.01"
    assert len(resolution.classes) == 26
    assert {401, 402, 579} <= set(resolution.classes)  # accordion, acoustic guitar, grand piano
    assert 207 not in resolution.classes


def test_crane_is_ambiguous_and_both_senses_can_be_named() -> None:
    h = load_imagenet_hierarchy()
    crane = h.resolve("crane")
    assert crane.note is not None and "crane.n.04" in crane.note and "crane.n.05" in crane.note
    assert h.resolve("crane.n.04").classes == (517,)  # the machine
    assert h.resolve("crane.n.05").classes == (134,)  # the bird
    assert set(crane.classes) <= {134, 517}


def test_food_means_dishes_and_solid_food_alike() -> None:
    food = load_imagenet_hierarchy().resolve("food")
    assert food.display == "food.n.01 + food.n.02"
    assert {954, 937, 931} <= set(food.classes)  # banana, broccoli, bagel
    assert {963, 933, 925} <= set(food.classes)  # pizza, cheeseburger, consomme
    assert food.note is not None and "food.n.01" in food.note


def test_the_five_fewshot_categories_resolve_to_disjoint_sets() -> None:
    classes = load_imagenet_hierarchy().resolve_classes(
        ["vehicle", "clothing", "food", "musical instrument", "furniture"])
    sizes = {c.name: len(c.classes) for c in classes}
    assert sizes == {"vehicle": 67, "clothing": 49, "food": 48, "musical instrument": 26, "furniture": 22}
    every = [i for c in classes for i in c.classes]
    assert len(every) == len(set(every))


def test_broad_and_narrow_real_names() -> None:
    animal, dog = load_imagenet_hierarchy().resolve_classes(["animal", "dog"])
    assert len(dog.classes) == 118
    assert not set(animal.classes) & set(dog.classes)
    assert 207 not in animal.classes and 17 in animal.classes  # golden retriever, jay


def test_irregular_plural_from_wordnet() -> None:
    assert load_imagenet_hierarchy().resolve("geese").classes == (99,)


def test_a_nonsense_name_is_an_error_with_suggestions() -> None:
    h = load_imagenet_hierarchy()
    with pytest.raises(ClassNameError, match="musicl instrument.*nearest known names: musical instrument"):
        h.resolve("musicl instrument")
    with pytest.raises(ClassNameError, match="no ImageNet class or group is called 'qwxzzv'"):
        h.resolve("qwxzzv")


# ------------------------------------------------------------------------------------------------
# Names as people mean them


def test_a_name_covers_the_senses_a_person_counts_under_it() -> None:
    h = load_imagenet_hierarchy()
    cat = h.resolve("cats")
    assert cat.display == "cat.n.01 + big_cat.n.01"
    assert {281, 292, 289} <= set(cat.classes)  # tabby, tiger, snow leopard
    boat = h.resolve("boat")
    assert {510, 625, 814} <= set(boat.classes)  # container ship, lifeboat, speedboat
    assert 968 in h.resolve("cup").classes and 504 in h.resolve("cup").classes  # cup, coffee mug
    # Senses far apart stay apart: WordNet's first (commonest) is taken.
    assert h.resolve("toy").display == "plaything.n.01"
    assert h.resolve("crane").classes == (517,)


@pytest.mark.parametrize(("name", "noun"), [("my mugs", "mug"), ("Grandma's dogs", "dog"), ("red cars", "car"),
                                            ("her cat", "cat"), ("little boats", "boat")])
def test_words_before_the_noun_are_let_go(name: str, noun: str) -> None:
    h = load_imagenet_hierarchy()
    got = h.resolve(name)
    assert got.classes == h.resolve(noun).classes
    assert got.name == name and got.note is not None and "read as" in got.note
    # A phrase that is itself a name stays one.
    assert h.resolve("hot dogs").classes == (934,)


def test_the_other_names_choose_between_senses_far_apart() -> None:
    h = load_imagenet_hierarchy()
    crane, _, _ = h.resolve_classes(["crane", "heron", "stork"])
    assert crane.classes == (134,) and "nearest to 'heron'" in crane.notes[0]
    crane, _ = h.resolve_classes(["crane", "forklift"])
    assert crane.classes == (517,)


def test_photos_choose_between_senses_when_they_are_given() -> None:
    h = tiny()
    bird_photos = [0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0]  # mean probabilities: the crane bird
    (crane,) = h.resolve_classes(["crane"], evidence=[bird_photos])
    assert crane.classes == (2,) and "photos" in crane.notes[0]
    (crane,) = h.resolve_classes(["crane"], evidence=[None])
    assert crane.classes == (4,)


def test_an_edited_name_adds_and_takes_away_classes() -> None:
    h = load_imagenet_hierarchy()
    cat = h.resolve("cat = cat - tiger")
    assert cat.name == "cat" and 292 not in cat.classes and 289 in cat.classes and cat.removed == (292,)
    assert h.resolve("cats - tiger").classes == cat.classes
    boat = h.resolve("boat = boat.n.01 + ship.n.01 - submarine")
    assert 510 in boat.classes and 833 not in boat.classes and 625 in boat.classes
    assert h.resolve("t-shirt").classes == (610,)  # a hyphen inside a word is no minus
    with pytest.raises(ClassNameError, match="leaves no class"):
        h.resolve("tiger = tiger - tiger")
    with pytest.raises(ClassNameError, match="needs a name"):
        h.resolve("cat = cat -")


def test_the_editable_list_of_a_name_and_unticking_a_class() -> None:
    import numpy as np

    from vit_desktop.core.labels.categories import Categories, coverage, parse_names

    h = load_imagenet_hierarchy()
    cat, dog = coverage(["cat", "dog"], h)
    assert cat.name == "cat" and 292 in cat.offered and cat.ticked(292)
    line = cat.line_with([c for c in cat.classes if c != 292], h)
    assert line == "cat = cat - tiger"
    assert cat.line_with(cat.classes, h) == "cat"
    # The edited line, read back as --classes and the names box read it: a tiger no longer counts.
    categories = Categories.from_names(parse_names(f"{line}, dog"), h)
    assert categories.names == ("cat", "dog")
    tiger_photo = np.zeros(1000, dtype=np.float32)
    tiger_photo[292] = 1.0
    assert categories.scores(tiger_photo[None])[0].tolist() == [0.0, 0.0]
    (edited,) = coverage([line], h)
    assert not edited.ticked(292) and 292 in edited.offered
    assert edited.line_with(cat.classes, h) == "cat"  # ticked again: the plain name


def test_names_the_hierarchy_cannot_tell_apart_are_left_to_the_photos() -> None:
    from vit_desktop.core.labels.categories import resolve_some

    my, her, dog = resolve_some(["my mug", "her mug", "dog"], load_imagenet_hierarchy())
    assert my is None and her is None and dog is not None
