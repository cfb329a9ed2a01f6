# neus-stage: photos of an object -> COLMAP poses -> masks -> NeuS dataset -> visual hull -> NeuS
# -> mesh -> evaluation. The one entry point; the rules live in workflow/rules/, the work in neus_stage/.
from snakemake.utils import min_version, validate

from neus_stage.settings import project_file, type_config

min_version("9.0")


# the working directory's config/config.yaml where it has one (a project folder), else the workflow's (the demo)
configfile: project_file("config/config.yaml", workflow.basedir)


# `--config mesh='{resolution: 512}'` leaves "512" a string: cast it to the schema's type before validating
type_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/frames.smk"
include: "workflow/rules/sfm.smk"
include: "workflow/rules/masks.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/mesh.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/benchmark.smk"


rule all:
    default_target: True
    input:
        final_targets(),
