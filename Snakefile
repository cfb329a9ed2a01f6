# neus-stage: photos of an object -> COLMAP poses -> masks -> NeuS dataset -> visual hull -> NeuS
# -> mesh -> evaluation. The one entry point; the rules live in workflow/rules/, the work in neus_stage/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/sfm.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/mesh.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/benchmark.smk"


rule all:
    default_target: True
    input:
        final_targets(),
