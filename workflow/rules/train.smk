rule train:
    input:
        cameras="results/{scene}/dataset/cameras_sphere.npz",
        images="results/{scene}/dataset/image",
        bbox="results/{scene}/bbox.json",
        hull="results/{scene}/hull.npz",
    output:
        checkpoint="results/{scene}/neus/checkpoint.pt",
        config="results/{scene}/neus/config.yaml",
        metrics="results/{scene}/neus/metrics.json",
    log:
        "logs/train/{scene}.log",
    benchmark:
        "benchmarks/train/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 8
    resources:
        mem_mb=16000,
        gpu=1,
        runtime=720,
    params:
        settings=train_settings,
    shell:
        NEUS_STAGE
        + " --log {log} train --dataset results/{wildcards.scene}/dataset --hull {input.hull}"
        " --bbox {input.bbox} --out results/{wildcards.scene}/neus --preset {params.settings[preset]}"
        " --config-json '{params.settings[overrides]}' --set threads={threads}"
