# The clean mesh as a textured asset: GLB (glTF 2.0, y-up) and OBJ + MTL + PNG, decimated to
# export.faces, UV-unwrapped, the texture (export.texture_size^2) baked from the photos or the colour network.
rule export:
    input:
        unpack(export_inputs),
    output:
        glb="results/{scene}/export/{scene}.glb",
        obj="results/{scene}/export/{scene}.obj",
        mtl="results/{scene}/export/{scene}.mtl",
        png="results/{scene}/export/{scene}.png",
        meta="results/{scene}/export/export.json",
        preview="results/{scene}/export/preview.jpg",
    log:
        "logs/export/{scene}.log",
    benchmark:
        "benchmarks/export/{scene}.tsv"
    conda:
        "../../environment.yml"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        faces=config["export"]["faces"],
        texture_size=config["export"]["texture_size"],
        texture_from=config["export"]["texture_from"],
        checkpoint=lambda wc, input: (
            f" --checkpoint {input.checkpoint}" if "checkpoint" in input.keys() else ""
        ),
    shell:
        NEUS_STAGE
        + " --log {log} export --mesh {input.mesh} --dataset results/{wildcards.scene}/dataset"
        " --out results/{wildcards.scene}/export --name {wildcards.scene} --faces {params.faces}"
        " --texture-size {params.texture_size} --texture-from {params.texture_from}{params.checkpoint}"
