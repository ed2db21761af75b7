"""Damaged images: finding what is left of a BitLocker volume, and salvaging it.

From the bottom up:

* :mod:`~bdekit.recovery.metadata_scan` - searching an image for FVE metadata blocks and EOW
  information blocks by signature;
* :mod:`~bdekit.recovery.boot_search` - finding boot sectors: the relocated one, the NTFS
  backup, the sector size a boot sector decrypts under;
* :mod:`~bdekit.recovery.unlock_copies` - unlocking candidate metadata, choosing the copy
  whose SHA-256 integrity datum verifies;
* :mod:`~bdekit.recovery.layout` - inferring the layout facts lost metadata leaves unknown,
  checking a key against the image, rebuilding a damaged boot sector from its backup;
* :mod:`~bdekit.recovery.method_guess` - which encryption method and sector size an FVEK
  belongs to, by scoring trial decryptions;
* :mod:`~bdekit.recovery.sector_judge` - judging each sector by its own bytes where the
  layout that should decide is unknown (every guess reported);
* :mod:`~bdekit.recovery.salvage_keyonly` - salvage with an FVEK and no metadata at all;
* :mod:`~bdekit.recovery.open_damaged` - opening a damaged volume: its own copies, a scan,
  key packages, salvage with an FVEK, in that order;
* :mod:`~bdekit.recovery.repair` - the ``bdekit repair`` job: salvage reads, decryption with
  a journal, the output mapfile and report;
* :mod:`~bdekit.recovery.survey` - the ``bdekit scan`` report: partitions, BitLocker volumes,
  stray metadata blocks.
"""
