"""The normalise processor: raw intake in, SI readings, rejections and accounting out.

Modules: ``handler`` (``intake.received`` -> readings, the processor ``normalise``),
``reported`` (``readings.reported`` -> SI, the processor ``normalise-units``),
``dispatch`` (content type -> parser), the parsers (``tabular/``, ``lineprotocol``,
``jsonpush``), and the one rulebook every door uses: ``push`` (push doors' records),
``rules`` (SI conversion, window, range, duplicates, accounting), ``clock`` (DST),
``numbers`` (a source's number notation).  Pure: the runner loads the payload and mapping.
"""
