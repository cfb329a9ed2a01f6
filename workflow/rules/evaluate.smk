rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        "results/{scene}/eval.json",
    params:
        args=evaluate_args,
    log:
        "logs/evaluate/{scene}.log",
    benchmark:
        "benchmarks/evaluate/{scene}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        "neus-stage evaluate --mesh {input.mesh} --out {output} {params.args}"
        " --error-cloud results/{wildcards.scene}/eval_errors.ply > {log} 2>&1"
