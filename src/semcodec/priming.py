"""The examples that prime profiles 3, 4 and 5: part of the format (SPEC §2), never edited.

Each example of profiles 3 and 4 becomes an earlier user/assistant chat turn of the
profile's context (``registry._chat``), in this order; profile 5's are consecutive
assistant replies after one user turn (``registry._replies``). They are COCO captions (CC BY 4.0) from
``shared/data`` chosen by ``benchmarks/priming.py`` (numbers in ``benchmarks/README.md``):
captions: one random caption per image from the first 200 images, the first 30 of a
seeded shuffle, longest first ("short-last", the better order measured); paragraphs:
the first 10 of a seeded shuffle of the first 100 paragraphs (short-last did not help);
paragraph replies: the first 20 of a seeded shuffle of the first 200 paragraphs, the
confirm-set winner of ``benchmarks/priming.py paragraph-levers``. Changing a character
here changes every table of ids 3–5: ``format/vectors/v2/tables.json`` and
``format/vectors/v3/tables.json`` pin them.

    >>> len(CAPTION_EXAMPLES), len(PARAGRAPH_EXAMPLES), len(PARAGRAPH_REPLIES)
    (30, 10, 20)
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


PARAGRAPH_REPLIES: tuple[str, ...] = (
    (
        "a woman lying on a bed underneath a blanket A woman laying in bed next to a window. A woman in a"
        " night gown lying on a bed. A woman lounging in bed posing for this photo. there is a woman with a"
        " robe on laying in bed"
    ),
    (
        "A red and yellow train is shown on the train tracks. A red train pulling into the station under a"
        " steel framed roof. A red and yellow train at station under a glass roof. A train sits running in a"
        " modern station. A red train parked under a sheltered station area."
    ),
    (
        "A man flying through the air while riding skis. A skier is jumping while other skiers watch. a"
        " person on skis is doing a twist during a jump A person in skis flies in the air from doing a trick."
        " a snow skier is doing an aerial trick"
    ),
    (
        "A cat looking forward while laying down on a green cushion. A cat laying on a pillow on a couch The"
        " kitten lies on it's side beside a yellow pillow. a cat lays down on a soft blanket A kitten is"
        " laying on a green throw pillow."
    ),
    (
        "A black and white image of a shipyard with some boats. Several old boats sitting in an old ship"
        " yard. A pier with various boats and ships parked. A black and white photo of a shipyard. Black and"
        " white photo of an old dock with low water."
    ),
    (
        "A tan utility truck with a blue interior. A decoratively painted business truck for a motor company"
        " a truck on a street next to a building A white and blue truck parked on a street. A small truck"
        " parked on the side of a street ready to go."
    ),
    (
        "A wooden desk with a laptop computer sitting on it. a computer monitor, keyboard and laptop on a"
        " desk Not the biggest workspace in the world, but it works a desk with a laptop a monitor and a"
        " chair deck with lap top computer and desk top"
    ),
    (
        "A parking meter next to a handicap parking space. A parking meter that is placed right next to a"
        " parking lot. a parking meter on the side of a road with a red light showing The parking meter in"
        " the parking lot has seven fifteen on it. A parket meter sitting next to a parking space."
    ),
    (
        "Awake cat near ceiling on a closed refrigerator A cat sitting on top of a metallic refrigerator"
        " freezer. a cat sits on top of a fridge in a kitchen a cat stands on top of a refrigerator looking"
        " down. A long haired cat sitting on a refrigerator"
    ),
    (
        "A man swinging a tennis racquet at a ball on a court. A tennis player is playing tennis while a"
        " crowd watches. A tennis player playing tennis on the court. The tennis player's feet leave the"
        " ground as he hits the ball. A tennis player is jumping in the air at a tennis match."
    ),
    (
        "A man holding a silver flip phone open in front of his face. A guy in a green shirt holding his cell"
        " phone to take a picture. A man in a green shirt is taking a picture with his cell phone. Man in a"
        " park taking a picture with his phone. Individual is doing something at the moment that is"
        " intriguing."
    ),
    (
        "Two giraffes at the zoo during the day. Two giraffes wander the open park in the same direction. Two"
        " giraffe standing next to each other on a dirt road next to a grass field. Two giraffe standing on"
        " dirt near flowering trees. Two giraffes standing on a dirt path in a fenced in area with trees and"
        " green grass surrounding them."
    ),
    (
        "A man that is jumping in the air with a skateboard. A male skateboarder that an ollie off the curb"
        " of a snowy street. A skateboarder is doing a trick on his board. a male skateboarder in a black"
        " jacket doing a trick skateboarder does a jump off of the street corner"
    ),
    (
        "Dark clouds moving in over a harbor full of moored sailboats. Nice open stretches of land that is"
        " alive. sailboats at a dock waiting for a storm to pass A dark cloud looms behind boats docked in a"
        " harbor. Several sailboats are docked at a lake under cloudy skies."
    ),
    (
        "A black trash bag in a restroom next to a sink. a garbage bag in a white lighted bathroom The"
        " bathroom has a wall sink, medicine cabinet, toothbrush holder, and bare walls. A door is open to a"
        " white bathroom that has a black garbage back on the floor. The bathroom door is open with the light"
        " on."
    ),
    (
        "A female statue in a sea of green grass next to plant a statue of a lady carrying a water pitcher a"
        " satute in a field of grass near a plant a statue us standing in some green grass A woman statue"
        " holding a pitcher and basket in a garden."
    ),
    (
        "A half eaten slice of pizza is on a plate with a knife and fork. pizza with olives on black plate"
        " setting on table A dining table with some very tasty looking pizza. A plate that has food on a"
        " table. Plates of Pizza with silverware next to ketchup and other condiments."
    ),
    (
        "A fruit smoothie is on display on a plate with two strawberries for garnish. Two strawberries sit on"
        " a plate next to a milkshake. A couple of strawberries placed next to the strawberry beverage. A"
        " strawberry milk shake and two strawberries on a plate. The strawberries was sitting beside the tall"
        " glass of milkshake"
    ),
    (
        "Sail boats sail over a body of water while people stand near the shoreline. A lot of sailboats that"
        " are in the water. A beach scene with sail boats, a dog, and people wading. We see a very old"
        " picture of people enjoying the shore. Small sailboats floating past a beach, with a dog and people"
        " on the beach."
    ),
    (
        "Two teenage girls paying a video game together. Two girls play Ninendo Wii while standing in front"
        " of a couch. Two girls with brown hair play with Wii remotes. Two girls are playing a game on their"
        " Nintendo Wii. A picture of two people playing a video game."
    ),
)
"""Five-caption paragraphs as consecutive assistant replies after one user turn: profile 5
(``smollm2-135m-instruct/paragraph-replies``, the v3 short form's cheapest id)."""
