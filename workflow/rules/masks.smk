rule masks:
    input:
        unpack(masks_inputs),
    output:
        directory("results/{scene}/masks"),
    log:
        "logs/masks/{scene}.log",
    benchmark:
        "benchmarks/masks/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        args=masks_args,
        model=config["masks"]["model"],
        threshold=config["masks"]["threshold"],
    shell:
        NEUS_STAGE
        + " --log {log} masks {params.args} --out {output} --model {params.model}"
        " --threshold {params.threshold}"
