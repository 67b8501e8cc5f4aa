"""What xbench knows about published datasets read from disk: names, domains, classes, sources.

Facts only (no code runs here). Folder names follow the layout the datasets
are distributed in and that DomainBed (Gulrajani & Lopez-Paz, 2021) expects
under its data directory: ``<folder>/<domain>/<class>/<image>``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """One published dataset: where it comes from and how it is laid out on disk."""

    name: str                      # xbench task name
    title: str
    citation: str
    url: str
    folder: str                    # its usual folder name under a data directory
    domains: tuple[str, ...]
    classes: tuple[str, ...]
    default_target: str
    images: str                    # approximate image count, for `xbench data info`
    inner: str = ""                # a folder inside each domain that holds the classes
    layout: str = ""               # a layout other than <domain>/<class>/<image>


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


PACS = DatasetInfo(
    name="pacs", title="PACS (Photo, Art painting, Cartoon, Sketch)",
    citation="Li, Yang, Song & Hospedales. Deeper, Broader and Artier Domain Generalization. "
             "ICCV 2017.",
    url="https://domaingeneralization.github.io/ (also fetched by DomainBed's "
        "domainbed/scripts/download.py)",
    folder="PACS", domains=("art_painting", "cartoon", "photo", "sketch"),
    classes=_names("dog elephant giraffe guitar horse house person"),
    default_target="sketch", images="9,991")

VLCS = DatasetInfo(
    name="vlcs", title="VLCS (VOC2007, LabelMe, Caltech101, SUN09)",
    citation="Fang, Xu & Rockmore. Unbiased Metric Learning: On the Utilization of Multiple "
             "Datasets and Web Images for Softening Bias. ICCV 2013.",
    url="https://github.com/facebookresearch/DomainBed (domainbed/scripts/download.py)",
    folder="VLCS", domains=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    classes=_names("bird car chair dog person"), default_target="LabelMe", images="10,729")

OFFICE_HOME = DatasetInfo(
    name="officehome", title="Office-Home",
    citation="Venkateswara, Eusebio, Chakraborty & Panchanathan. Deep Hashing Network for "
             "Unsupervised Domain Adaptation. CVPR 2017.",
    url="https://www.hemanthdv.org/officeHomeDataset.html",
    folder="office_home", domains=("Art", "Clipart", "Product", "Real World"),
    classes=_names("""
        Alarm_Clock Backpack Batteries Bed Bike Bottle Bucket Calculator Calendar Candles
        Chair Clipboards Computer Couch Curtains Desk_Lamp Drill Eraser Exit_Sign Fan
        File_Cabinet Flipflops Flowers Folder Fork Glasses Hammer Helmet Kettle Keyboard
        Knives Lamp_Shade Laptop Marker Monitor Mop Mouse Mug Notebook Oven Pan Paper_Clip
        Pen Pencil Postit_Notes Printer Push_Pin Radio Refrigerator Ruler Scissors
        Screwdriver Shelf Sink Sneakers Soda Speaker Spoon TV Table Telephone ToothBrush
        Toys Trash_Can Webcam"""),
    default_target="Clipart", images="15,588")

TERRA_INCOGNITA = DatasetInfo(
    name="terraincognita", title="TerraIncognita (camera traps at four locations)",
    citation="Beery, Van Horn & Perona. Recognition in Terra Incognita. ECCV 2018.",
    url="https://lila.science/datasets/caltech-camera-traps (DomainBed's "
        "domainbed/scripts/download.py builds the four-location, ten-class subset)",
    folder="terra_incognita",
    domains=("location_100", "location_38", "location_43", "location_46"),
    classes=_names("bird bobcat cat coyote dog empty opossum rabbit raccoon squirrel"),
    default_target="location_100", images="24,788")

DOMAIN_NET = DatasetInfo(
    name="domainnet", title="DomainNet",
    citation="Peng, Bai, Xia, Huang, Saenko & Wang. Moment Matching for Multi-Source Domain "
             "Adaptation. ICCV 2019.",
    url="http://ai.bu.edu/M3SDA/",
    folder="domain_net",
    domains=("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
    classes=_names("""
        aircraft_carrier airplane alarm_clock ambulance angel animal_migration ant anvil apple
        arm asparagus axe backpack banana bandage barn baseball baseball_bat basket basketball
        bat bathtub beach bear beard bed bee belt bench bicycle binoculars bird birthday_cake
        blackberry blueberry book boomerang bottlecap bowtie bracelet brain bread bridge
        broccoli broom bucket bulldozer bus bush butterfly cactus cake calculator calendar
        camel camera camouflage campfire candle cannon canoe car carrot castle cat ceiling_fan
        cello cell_phone chair chandelier church circle clarinet clock cloud coffee_cup compass
        computer cookie cooler couch cow crab crayon crocodile crown cruise_ship cup diamond
        dishwasher diving_board dog dolphin donut door dragon dresser drill drums duck dumbbell
        ear elbow elephant envelope eraser eye eyeglasses face fan feather fence finger
        fire_hydrant fireplace firetruck fish flamingo flashlight flip_flops floor_lamp flower
        flying_saucer foot fork frog frying_pan garden garden_hose giraffe goatee golf_club
        grapes grass guitar hamburger hammer hand harp hat headphones hedgehog helicopter
        helmet hexagon hockey_puck hockey_stick horse hospital hot_air_balloon hot_dog hot_tub
        hourglass house house_plant hurricane ice_cream jacket jail kangaroo key keyboard knee
        knife ladder lantern laptop leaf leg light_bulb lighter lighthouse lightning line lion
        lipstick lobster lollipop mailbox map marker matches megaphone mermaid microphone
        microwave monkey moon mosquito motorbike mountain mouse moustache mouth mug mushroom
        nail necklace nose ocean octagon octopus onion oven owl paintbrush paint_can palm_tree
        panda pants paper_clip parachute parrot passport peanut pear peas pencil penguin piano
        pickup_truck picture_frame pig pillow pineapple pizza pliers police_car pond pool
        popsicle postcard potato power_outlet purse rabbit raccoon radio rain rainbow rake
        remote_control rhinoceros rifle river roller_coaster rollerskates sailboat sandwich saw
        saxophone school_bus scissors scorpion screwdriver sea_turtle see_saw shark sheep shoe
        shorts shovel sink skateboard skull skyscraper sleeping_bag smiley_face snail snake
        snorkel snowflake snowman soccer_ball sock speedboat spider spoon spreadsheet square
        squiggle squirrel stairs star steak stereo stethoscope stitches stop_sign stove
        strawberry streetlight string_bean submarine suitcase sun swan sweater swing_set sword
        syringe table teapot teddy-bear telephone television tennis_racquet tent
        The_Eiffel_Tower The_Great_Wall_of_China The_Mona_Lisa tiger toaster toe toilet tooth
        toothbrush toothpaste tornado tractor traffic_light train tree triangle trombone truck
        trumpet t-shirt umbrella underwear van vase violin washing_machine watermelon
        waterslide whale wheel windmill wine_bottle wine_glass wristwatch yoga zebra zigzag"""),
    default_target="sketch", images="586,575")

OFFICE_31 = DatasetInfo(
    name="office31", title="Office-31",
    citation="Saenko, Kulis, Fritz & Darrell. Adapting Visual Category Models to New Domains. "
             "ECCV 2010.",
    url="https://faculty.cc.gatech.edu/~judy/domainadapt/",
    folder="office31", domains=("amazon", "dslr", "webcam"),
    classes=_names("""
        back_pack bike bike_helmet bookcase bottle calculator desk_chair desk_lamp
        desktop_computer file_cabinet headphones keyboard laptop_computer letter_tray
        mobile_phone monitor mouse mug paper_notebook pen phone printer projector punchers
        ring_binder ruler scissors speaker stapler tape_dispenser trash_can"""),
    default_target="amazon", images="4,110", inner="images")

DIGITS = DatasetInfo(
    name="digits_mnist_usps_svhn", title="MNIST, USPS and SVHN digits",
    citation="LeCun et al. 1998 (MNIST); Hull 1994 (USPS); Netzer et al. 2011 (SVHN).",
    url="http://yann.lecun.com/exdb/mnist/ ; "
        "https://www.csie.ntu.edu.tw/~cjlin/libsvmtools/datasets/multiclass.html#usps ; "
        "http://ufldl.stanford.edu/housenumbers/",
    folder="digits", domains=("mnist", "usps", "svhn"),
    classes=tuple(str(d) for d in range(10)), default_target="mnist", images="70k + 9k + 99k",
    layout="torchvision's files under one root: MNIST/raw/{train,t10k}-{images-idx3,"
           "labels-idx1}-ubyte, usps.bz2 and usps.t.bz2, train_32x32.mat and test_32x32.mat "
           "(what torchvision's MNIST, USPS and SVHN readers write with download=True)")

#: Folder-layout presets by task name.
PRESETS: dict[str, DatasetInfo] = {d.name: d for d in (PACS, VLCS, OFFICE_HOME, TERRA_INCOGNITA,
                                                       DOMAIN_NET, OFFICE_31)}

#: Every dataset `xbench data` knows, by name.
DATASETS: dict[str, DatasetInfo] = {**PRESETS, DIGITS.name: DIGITS}
