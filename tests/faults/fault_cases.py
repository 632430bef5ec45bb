"""The damaged VOC folder shared by the suite and what rcnn-zoo must say about it."""

import os

from faultkit import VocCopy, empty, text_file, truncate

# Photos of the shared data set used here (each at most once per folder).
TRAIN_GOOD = {"good0": "raccoon-1", "good1": "raccoon-10", "good2": "raccoon-100", "good3": "raccoon-101"}


def build_damaged_voc(root):
    """The folder described in the module docstring; returns the :class:`VocCopy`."""
    voc = VocCopy(root)
    # ---- train.txt
    for stem, photo in TRAIN_GOOD.items():
        voc.add(stem, photo)
    voc.add("noobj", "raccoon-102", objects=[])  # a photo without objects: kept, trained on
    # Every box dropped: inverted, zero-area (VOC xmax = xmin - 1), wholly outside. Kept, 0 objects.
    voc.add("dropped", "raccoon-103", objects=lambda w, h, b: [
        ("raccoon", 50, 10, 20, 40), ("raccoon", 10, 10, 9, 40), ("raccoon", w + 10, 5, w + 40, 30)])
    # Partly outside (clipped, kept) and inverted (dropped).
    voc.add("clipped", "raccoon-104", objects=lambda w, h, b: [
        ("raccoon", -10, 5, 40, h + 20), ("raccoon", 30, 30, 5, 50)])
    # <size> twice the real size (the image's own size is used; kept).
    voc.add("resized", "raccoon-105")
    w, h = voc.sizes["resized"]
    voc.write_xml("resized", [("raccoon", *voc.boxes["resized"][0])], size=(2 * w, 2 * h))
    voc.add("trunc", "raccoon-106")
    truncate(voc.image("trunc"))  # a download cut short
    voc.add("zero", "raccoon-107")
    empty(voc.image("zero"))  # 0 bytes
    voc.add("text", "raccoon-108")
    text_file(voc.image("text"))  # a text file named .jpg
    voc.add("badxml", "raccoon-109")
    truncate(voc.xml("badxml"))  # XML cut short
    voc.add("emptyxml", "raccoon-11")
    empty(voc.xml("emptyxml"))
    voc.add("ghost", "raccoon-110")
    os.remove(voc.image("ghost"))  # listed, XML there, image missing
    # "noxml": listed, no XML at all
    voc.split("train", [*TRAIN_GOOD, "noobj", "dropped", "clipped", "resized", "trunc", "zero", "text",
                        "badxml", "emptyxml", "ghost", "noxml"])
    # ---- val.txt
    voc.add("val0", "raccoon-111")
    voc.add("val1", "raccoon-112")
    voc.add("valdog", "raccoon-113", objects=lambda w, h, b: [("raccoon", *b[0]), ("dog", 2, 2, 20, 20)])
    voc.add("valtrunc", "raccoon-114")
    truncate(voc.image("valtrunc"), 0.3)
    voc.add("valgone", "raccoon-115")
    os.remove(voc.image("valgone"))
    voc.split("val", ["val0", "val1", "valdog", "valtrunc", "valgone"])
    # ---- test.txt
    voc.add("test0", "raccoon-116")
    voc.add("test1", "raccoon-117")
    voc.add("test2", "raccoon-118")
    voc.add("testdog", "raccoon-119", objects=lambda w, h, b: [("raccoon", *b[0]), ("dog", 3, 3, 30, 30)])
    voc.add("testtext", "raccoon-12")
    text_file(voc.image("testtext"), "<html>404 Not Found</html>\n")
    voc.add("testxml", "raccoon-120")
    truncate(voc.xml("testxml"), 0.7)
    voc.split("test", ["test0", "test1", "test2", "testdog", "testtext", "testxml", "test1"])
    return voc


# What rcnn-zoo must say about each split: images used, and per problem kind (count, files).
EXPECTED = {
    "train": {
        "images": 8,  # good0-3, noobj, dropped, clipped, resized
        "skipped": 11,
        "kinds": {
            "malformed annotation": (2, ["badxml.xml", "emptyxml.xml"]),
            "missing file": (2, ["noxml.xml", "ghost.jpg"]),
            "unreadable image": (3, ["trunc.jpg", "zero.jpg", "text.jpg"]),
            "zero-area or inverted box": (3, ["dropped.xml: object 0", "dropped.xml: object 1",
                                              "clipped.xml: object 1"]),
            "box wholly outside the image": (1, ["dropped.xml: object 2"]),
            "box partly outside the image (clipped, kept)": (1, ["clipped.xml: object 0"]),
            "annotated size differs from the image (image size used, kept)": (1, ["resized.xml"]),
        },
    },
    "val": {
        "images": 3,  # val0, val1, valdog
        "skipped": 3,
        "kinds": {
            "unknown class": (1, ["valdog.xml: object 1 class 'dog'"]),
            "unreadable image": (1, ["valtrunc.jpg"]),
            "missing file": (1, ["valgone.jpg"]),
        },
    },
    "test": {
        "images": 4,  # test0, test1, test2, testdog
        "skipped": 4,
        "kinds": {
            "unknown class": (1, ["testdog.xml: object 1 class 'dog'"]),
            "unreadable image": (1, ["testtext.jpg: not an image"]),
            "malformed annotation": (1, ["testxml.xml: not well-formed XML"]),
            "duplicate image (only the first kept)": (1, ["test.txt: 'test1' is listed again"]),
        },
    },
}
