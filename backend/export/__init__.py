"""Export: the (edited) neural field becomes a textured triangle mesh.

field -> density grid -> marching cubes (extract.py) -> merge + drop floaters (cleanup.py)
-> decimate to a face budget (decimate.py) -> xatlas UVs + per-texel colour bake (uv_bake.py)
-> GLB / OBJ files in the source object's local frame (glb.py, obj.py), orchestrated by
pipeline.py. Every step is plain numpy except the field queries, which run on the field's device.
"""
