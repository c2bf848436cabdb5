"""The examples that prime profiles 3 and 4: part of the format (SPEC §2), never edited.

Each example becomes an earlier user/assistant chat turn of the profile's context
(``registry._chat``), in this order. They are COCO captions (CC BY 4.0) from
``shared/data`` chosen by ``benchmarks/priming.py`` (numbers in ``benchmarks/README.md``):
captions: one random caption per image from the first 200 images, the first 30 of a
seeded shuffle, longest first ("short-last", the better order measured); paragraphs:
the first 10 of a seeded shuffle of the first 100 paragraphs (short-last did not help). Changing a character
here changes every table of ids 3 and 4: ``format/vectors/v2/tables.json`` pins them.

    >>> len(CAPTION_EXAMPLES), len(PARAGRAPH_EXAMPLES)
    (30, 10)
"""

CAPTION_EXAMPLES: tuple[str, ...] = (
    "A person sitting on a horse in air over gate in grass with people and trees in background.",
    "The bench sitting on the side of the road is multi-colored.",
    "A man and a woman playing a game on the Nintendo Wii.",
    "A patty, with frosting on it, in the middle.",
    "Three teenage girls hover under an umbrella while they talk and laugh.",
    "A man and woman sitting on a couch playing a video game.",
    "A blue toilet sitting next to a bathroom sink in a bathroom.",
    "The big bird is standing on the beach by the water.",
    "a living room witj a couch some chairs and a tv",
    "Some people are walking down a snowy streets with white snow.",
    "An old clock hangs on the wall and gives the time.",
    "A baby girl standing in a shopping cart holding an umbrella.",
    "A counter with porcelain figurines, an umbrella and a bowl.",
    "A group of giraffes that are standing in the grass.",
    "Two zebras standing side by side in a field.",
    "A bunch of different colored umbrellas on tables.",
    "Two girls are playing video games in a living room.",
    "A picture of a road sign labeled bodacious drive.",
    "A banana is sitting beside a large bowl storage container.",
    "Two zebras relax in a wooded area near many trees",
    "a small boat floating down a river by a house",
    "four men are posing for a picture at an event",
    "A guy is posing with a plate of food.",
    "A studio apartment with balloons marking clues to find.",
    "A bathroom scene with a modern toilet and wooden fixtures",
    "a big clock sits on the side of a building",
    "People sticking knives into the back side of a laptop",
    "A hot dog with mustard and catchup on it",
    "a cat that is sitting outside a door",
    "three people riding horses on a beach",
)
"""One-sentence COCO captions: profile 3 (``smollm2-135m-instruct/captions``, v2's default)."""

PARAGRAPH_EXAMPLES: tuple[str, ...] = (
    (
        "People in a hall with a camera taking a picture a group of people that are petting a cat A group"
        " of people sitting around petting a cat. A group of women siting around a cat as they pet it."
        " People are sitting on the ground petting a cat."
    ),
    (
        "Giraffes and a bird behind a chain link fence at a zoo A couple of giraffe standing next to each"
        " other. Two giraffes that are together in an enclosure. Two giraffes stare at a crane from"
        " behind a fence. Two giraffes inside of a cage at the zoo."
    ),
    (
        "Person driving a plated motorcycle on a track with people watching. A MAN IS ON THE MOTOR BIKE"
        " WITH A HELEMT a close up of a person driving a motorcycle on a road A man who is riding a"
        " silver motorcycle with the number 120 on it. People standing behind bales of straw as a"
        " protection from motorcycles on a track."
    ),
    (
        "A white plate topped with dicked up lettuce next to carrots. some vegetables on a white plate"
        " ready to be cut A cutting board with carrots and some other leafy green vegetables along side a"
        " knife. A knife, carrots, and cabbage on a white cutting board. Salad ingredients, carrots,"
        " onions and some leafy green"
    ),
    (
        "A colorful bus parked in a lot beside a tall building with many windows. A bus that is red white"
        " and blue with advertising on it driving down the street. A big bus in a parking lot next to a"
        " big building Photograph of an outdoor place with a bus. A city bus in the parking lot of a"
        " building."
    ),
    (
        "A black and white image of a lot of round objects. Two apples, an orange, some grapes and"
        " peanuts. a black and white photo of nuts and fruit A pile of nuts in front of some assorted"
        " fruit. Apples, grapes, an oranges and peanuts on the white surface in a picture."
    ),
    (
        "a desk top with a bunch of electronics on it there are many lap tops on top of a small table"
        " Assortment of laptop computers displayed on table with backpacks full of electronic cords. Many"
        " laptops and their assorted wires atop a wooden bench. many laptops on a wooden table on being"
        " in use"
    ),
    (
        "A teddy bear and a stuffed raccoon sitting on a faded wooden outdoor chair. Two stuffed teddy"
        " bears sitting on a wooden chair in a yard. Two stuffed animals are sitting on a broken wooden"
        " chair. Two stuffed animals in a wooden outdoor chair. Two little bears sitting on a weathered"
        " wood chair."
    ),
    (
        "White birds are gathered around a water puddle. A group of birds in a bunch of puddles. White"
        " birds getting a drink from the water puddles. Several white birds standing in a puddle in a"
        " parking lot. A flock of white birds stands in a parking lot puddle."
    ),
    (
        "A scooter and tiny truck at a beach dry dock. A beach dock area lined with boats, and a small"
        " shack with a scooter and small cart near it. A moped and utility truck next to a small"
        " building. There so many boats, car and scooter at the beach A vehicle and a motor bike on the"
        " beach."
    ),
)
"""Five-caption paragraphs: profile 4 (``smollm2-135m-instruct/paragraphs``)."""
