rule mesh:
    input:
        checkpoint="results/{scene}/neus/checkpoint.pt",
        cameras="results/{scene}/dataset/cameras_sphere.npz",
        masks="results/{scene}/dataset/mask",
        bbox="results/{scene}/bbox.json",
        hull="results/{scene}/hull.npz",
    output:
        mesh="results/{scene}/mesh.ply",
        clean="results/{scene}/mesh_clean.ply",
        meta="results/{scene}/mesh.json",
    log:
        "logs/mesh/{scene}.log",
    benchmark:
        "benchmarks/mesh/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        resolution=config["mesh"]["resolution"],
        dilation=config["mesh"]["dilation"],
        min_component=config["mesh"]["min_component"],
        cut=(
            "--cut-at-support"
            if config["mesh"]["cut_at_support"]
            else "--no-cut-at-support"
        ),
    shell:
        NEUS_STAGE
        + " --log {log} mesh --checkpoint {input.checkpoint} --dataset results/{wildcards.scene}/dataset"
        " --bbox {input.bbox} --hull {input.hull} --out {output.mesh} --clean {output.clean}"
        " --resolution {params.resolution} --dilation {params.dilation}"
        " --min-component {params.min_component} {params.cut}"
