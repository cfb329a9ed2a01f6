# Scenes whose photos column names a video: its sharp, distinct frames become the scene's photos
# (results/{scene}/frames/NNNNN.jpg, read by sfm; report.json lists the kept and dropped frames).
rule frames:
    input:
        video=video_file,
    output:
        directory("results/{scene}/frames"),
    log:
        "logs/frames/{scene}.log",
    benchmark:
        "benchmarks/frames/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        target=config["frames"]["target"],
        min_frames=config["frames"]["min"],
        blur_ratio=config["frames"]["blur_ratio"],
        min_motion=config["frames"]["min_motion"],
    shell:
        NEUS_STAGE + " --log {log} frames --video {input.video:q} --out {output}"
        " --target {params.target} --min {params.min_frames} --blur-ratio {params.blur_ratio}"
        " --min-motion {params.min_motion}"
