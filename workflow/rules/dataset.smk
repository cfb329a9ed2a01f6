rule neus_dataset:
    input:
        unpack(dataset_inputs),
    output:
        cameras="results/{scene}/dataset/cameras_sphere.npz",
        meta="results/{scene}/dataset/meta.json",
        images=directory("results/{scene}/dataset/image"),
        masks=directory("results/{scene}/dataset/mask"),
    log:
        "logs/neus_dataset/{scene}.log",
    benchmark:
        "benchmarks/neus_dataset/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=4000,
    params:
        args=dataset_args,
        margin=config["dataset"]["margin"],
    shell:
        NEUS_STAGE
        + " --log {log} dataset {params.args} --masks {input.masks} --out results/{wildcards.scene}/dataset"
        " --margin {params.margin}"


rule visual_hull:
    input:
        cameras="results/{scene}/dataset/cameras_sphere.npz",
        masks="results/{scene}/dataset/mask",
    output:
        bbox="results/{scene}/bbox.json",
        hull="results/{scene}/hull.npz",
    log:
        "logs/visual_hull/{scene}.log",
    benchmark:
        "benchmarks/visual_hull/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        resolution=config["visual_hull"]["resolution"],
        votes=config["visual_hull"]["max_background_votes"],
        support=hull_args,
    shell:
        NEUS_STAGE
        + " --log {log} visual-hull --dataset results/{wildcards.scene}/dataset --bbox {output.bbox}"
        " --hull {output.hull} --resolution {params.resolution}"
        " --max-background-votes {params.votes} {params.support}"
