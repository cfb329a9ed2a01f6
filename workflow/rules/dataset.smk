rule neus_dataset:
    input:
        unpack(dataset_inputs),
    output:
        cameras="results/{scene}/dataset/cameras_sphere.npz",
        meta="results/{scene}/dataset/meta.json",
        images=directory("results/{scene}/dataset/image"),
        masks=directory("results/{scene}/dataset/mask"),
    params:
        args=dataset_args,
        margin=config["dataset"]["margin"],
    log:
        "logs/neus_dataset/{scene}.log",
    benchmark:
        "benchmarks/neus_dataset/{scene}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "neus-stage dataset {params.args} --masks {input.masks} --out results/{wildcards.scene}/dataset"
        " --margin {params.margin} > {log} 2>&1"


rule visual_hull:
    input:
        cameras="results/{scene}/dataset/cameras_sphere.npz",
        masks="results/{scene}/dataset/mask",
    output:
        bbox="results/{scene}/bbox.json",
        hull="results/{scene}/hull.npz",
    params:
        resolution=config["visual_hull"]["resolution"],
        votes=config["visual_hull"]["max_background_votes"],
    log:
        "logs/visual_hull/{scene}.log",
    benchmark:
        "benchmarks/visual_hull/{scene}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        "neus-stage visual-hull --dataset results/{wildcards.scene}/dataset --bbox {output.bbox}"
        " --hull {output.hull} --resolution {params.resolution}"
        " --max-background-votes {params.votes} > {log} 2>&1"
