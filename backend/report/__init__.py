"""Pictures of a job, for people who would rather look than read.

One concept per file:

* ``record``        what a job folder holds (spec, events, previews, manifest), read leniently:
                    a broken or missing file becomes a line in ``JobRecord.problems``, never an error;
* ``curves``        the loss curves of every stage (matplotlib, Agg backend) as a PNG;
* ``images``        reading, resizing, labelling and tiling RGB images (Pillow);
* ``views``         the held-out views: the capture's source views and the result field rendered
                    from the same cameras, kept in ``results/views/`` (``views.json`` lists them);
* ``page``          the self-contained ``results/report.html`` (images embedded as base64 PNG);
* ``build``         the report of one job (``report.html`` + ``report.png``), and the runner's
                    never-failing wrapper around it;
* ``contact_sheet`` the source and every variant of a queue from the same cameras, one row each.

Importing the package imports nothing heavy: matplotlib, Pillow and torch are imported by the
functions that need them.
"""
