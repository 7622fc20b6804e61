# The mount service as a container image: a NativeAOT `mlfs` on Debian slim with fuse3.
# scripts/container-image.sh builds it (this file where the base images can be pulled, else the same
# image from a debootstrap base); the README's container section shows how to run it.
#   docker build -t mlfs .
#   docker run --rm --cap-add SYS_ADMIN --device /dev/fuse \
#     -e AWS_ACCESS_KEY_ID -e AWS_SECRET_ACCESS_KEY -e AWS_REGION [-e AWS_ENDPOINT_URL] \
#     -v "$PWD/model-v1.json:/manifests/model.json:ro" -v mlfs-cache:/var/cache/mlfs \
#     -v /mnt/model:/mnt/model:rshared \
#     mlfs mount --manifest /manifests/model.json /mnt/model
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
RUN apt-get update && apt-get install -y --no-install-recommends clang zlib1g-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY global.json Directory.Build.props Directory.Packages.props ./
COPY src/ src/
COPY ServiceDefaults/ ServiceDefaults/
# Two builds: mlfs for any x86-64, mlfs-avx512 for x86-64-v4 (mlfs execs it where the CPU has AVX-512: BLAKE3 is 6x cheaper).
RUN dotnet publish src/Mlfs/Mlfs.csproj -c Release -r linux-x64 -p:PublishAot=true -o /out \
    && dotnet publish src/Mlfs/Mlfs.csproj -c Release -r linux-x64 -p:PublishAot=true -p:IlcInstructionSet=x86-64-v4 -o /out-v4 \
    && mv /out-v4/mlfs /out/mlfs-avx512 && rm -f /out/*.dbg /out/*.pdb

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends fuse3 ca-certificates && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/cache/mlfs /mnt/model && chmod 0700 /var/cache/mlfs
COPY --from=build /out/mlfs /out/mlfs-avx512 /usr/local/bin/
VOLUME /var/cache/mlfs
ENTRYPOINT ["/usr/local/bin/mlfs"]
CMD ["--help"]
