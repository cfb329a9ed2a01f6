"""Pure geometry: arrays (and callables) in, arrays out; no files, no stage logic. Import the modules themselves:
the package imports nothing, so that a stage that needs no torch does not load it.

- :mod:`.cameras`: the one camera type, the one projection (``project``, ``pixel_index``) and NeuS's camera
  convention.
- :mod:`.carving`: the voting visual hull (one carver for the visual-hull stage and the masks check);
  :mod:`.visual_hull`: its NeuS-convention views and the carve over a box (the visual-hull and dataset stages);
  :mod:`.mask_hull`: the masks check's hull (object region, votes, silhouettes of the hull in each view).
- :mod:`.extraction`: a mesh from an SDF callable (block-wise and coarse-to-fine sampling on a grid, marching
  cubes); :mod:`.mesh_tools`: signed volume, edge counts, vertex normals, cleaning and DTU-style mask culling.
- :mod:`.support`: the support surface an object stands on (a RANSAC plane of the scene's points, with
  an up prior from the cameras), with :mod:`.support_candidates` (one candidate plane) and :mod:`.support_fit`
  (plane fits: least squares, RANSAC, refinement).
- :mod:`.markers`: ArUco marker corners triangulated from known cameras (the metric scale).
- :mod:`.halfspace`: the half-space above that plane applied to an occupancy grid, a sampled SDF or an
  SDF callable.
- :mod:`.silhouette`: whether a cut hull still explains every silhouette (and how far a plane must be
  lowered below a base plate until it does).
- :mod:`.visibility`: which faces of a mesh some camera observes (a ray test against the mesh itself).
- :mod:`.distances`: point-to-surface distances and Chamfer / F-score; :mod:`.generic_chamfer`: the generic
  (non-DTU) evaluation's samples, thresholds and scores; :mod:`.dtu`: the point steps of the DTU evaluation
  protocol (sampling, thinning, crops).
- :mod:`.normalized_frame`: NeuS's normalised frame (scale_mat) to and from world units.
- :mod:`.texture`: texture baking from the photos; :mod:`.textured_mesh`: decimation, UV unwrapping and the
  baked atlas of the export; :mod:`.upright`: the upright frame;
  :mod:`.retrieval`: image pairs for matching large photo sets.
"""
