"""Streaming a whole unlocked volume into an output image (``decrypt`` and ``repair``).

``decrypt``  the loop: chunks read and decrypted on worker threads, consumed in order
             (:func:`~bdekit.pipeline.decrypt.decrypt_to`, its :class:`~.decrypt.Pace`);
``chunks``   reading one chunk through read errors, mapped to damaged output ranges;
``output``   the output file (temporary name, holes, rename) or device, and its checks;
``journal``  progress kept beside the output so that ``--resume`` continues a killed job;
``report``   what the job did (``--report`` JSON), byte counts and the damage list.
"""
