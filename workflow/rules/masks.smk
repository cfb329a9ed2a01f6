rule masks:
    input:
        unpack(masks_inputs),
    output:
        directory("results/{scene}/masks"),
    params:
        args=masks_args,
        model=config["masks"]["model"],
        threshold=config["masks"]["threshold"],
    log:
        "logs/masks/{scene}.log",
    benchmark:
        "benchmarks/masks/{scene}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        "neus-stage masks {params.args} --out {output} --model {params.model}"
        " --threshold {params.threshold} > {log} 2>&1"
