"""Keys from memory images: readers, key-schedule and structure searches, validation.

This layer sits above :mod:`bdekit.volume` (every candidate key is checked against the volume
before it is reported) and below the pipeline and the command line.

* :mod:`.images`     memory image containers (raw, LiME, Windows crash dumps) as extents of
  physical memory, read in bounded chunks with overlap;
* :mod:`.aes`        the AES key expansion and MixColumns, scalar and vectorised;
* :mod:`.schedule`   the expanded key schedule search (AES-128/256, encryption and decryption
  schedules, a few flipped bits tolerated);
* :mod:`.structures` the per-Windows-version FVEK structures (pool tags ``FVEc``, ``Cngb``,
  ``None``) and key datums (VMK, FVEK) left in memory;
* :mod:`.validate`   checking candidates against the volume (FVEK: boot sector and sampled
  sectors decrypt to valid structure; VMK: the FVEK datum's AES-CCM MAC);
* :mod:`.search`     the whole search: scan, pair, validate, report.
"""
