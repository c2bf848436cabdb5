"""Evaluation benches: how small semcodec's files are, and how good their pictures.

* ``semcodec bench text CORPUS...`` — the text codec against UTF-8, zlib, zstd (with and
  without a dictionary trained on a disjoint split), brotli, and the model's own
  cross-entropy (the payload's floor);
* ``semcodec bench images DIR`` — describe → code → repaint each image (with reflection
  rounds), bits and micro-bits per pixel, similarity scores, the smallest JPEG/WebP of
  the same image for reference, and an optional self-contained HTML report.

Modules, one job each:

* :mod:`.corpus` — reading one-text-per-line corpora and splitting them;
* :mod:`.classic` — the general-purpose coders (zlib, zstd, brotli) and their sizes;
* :mod:`.lmrate` — semcodec's own sizes, cross-entropy and pack/unpack speed;
* :mod:`.textbench` — the text table (assembles the two above);
* :mod:`.metrics` — image similarity metrics, each used when it is available here;
* :mod:`.anchors` — the smallest JPEG and WebP of an image;
* :mod:`.imagebench` — the image bench (pipeline roles in, per-iteration results out);
* :mod:`.svgplot` / :mod:`.report` — the rate–quality plot and the HTML page;
* :mod:`.tables` — plain-text tables;
* :mod:`.commands` — the ``semcodec bench`` subcommand.

Nothing here is imported by ``pack``/``unpack``; optional libraries (brotli, zstandard,
Pillow, torch) are imported only when a bench needs them.
"""
