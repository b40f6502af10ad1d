#!/usr/bin/env bash
# The fcl-ray image of the cluster files: one name, set once, in every file that runs pods or
# nodes (cluster/gpu-cluster.yaml, cluster/kuberay/*.yaml). The files ship with the placeholder
# REGISTRY/fcl-ray:<version>; `use` puts your registry in all of them.
#
#   cluster/image.sh use ghcr.io/you    # every cluster file now names ghcr.io/you/fcl-ray:<version>
#   cluster/image.sh name               # the image the cluster files name
#   cluster/image.sh build              # docker build -f cluster/Dockerfile -t <that image> .
#   cluster/image.sh push               # docker push <that image>
#
# <version> is the project version of pyproject.toml.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
FILES=("$HERE/cluster/gpu-cluster.yaml" "$HERE"/cluster/kuberay/*.yaml)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$HERE/pyproject.toml" | head -1)
PATTERN='[A-Za-z0-9._:/-]*/fcl-ray:[A-Za-z0-9._-]*'

named() {   # the distinct fcl-ray images the cluster files name, one per line
  grep -ho "image: *$PATTERN" "${FILES[@]}" | sed 's/image: *//' | sort -u
}

current() {  # the one image, or exit 2 with the reason
  local images
  images=$(named)
  if [[ -z "$images" ]]; then echo "cluster/image.sh: no cluster file names an fcl-ray image" >&2; exit 2; fi
  if [[ $(wc -l <<<"$images") -gt 1 ]]; then
    echo "cluster/image.sh: the cluster files name different images: $(tr '\n' ' ' <<<"$images")" >&2
    echo "  set one with: cluster/image.sh use <registry>" >&2; exit 2
  fi
  echo "$images"
}

needs_registry() {  # build/push need a real registry, not the placeholder
  local image=$1
  if [[ $image == REGISTRY/* ]]; then
    echo "cluster/image.sh: the cluster files still name the placeholder $image;" \
         "set your registry first: cluster/image.sh use <registry>, e.g. ghcr.io/you" >&2
    exit 2
  fi
}

case "${1:-}" in
  use)
    registry=${2:-}
    if [[ -z $registry || $registry == */ || $registry =~ [[:space:]] ]]; then
      echo "cluster/image.sh use: expected a registry such as ghcr.io/you, got '${registry}'" >&2; exit 2
    fi
    image="$registry/fcl-ray:$VERSION"
    sed -i "s#image: *$PATTERN#image: $image#" "${FILES[@]}"
    echo "cluster files now name $image" ;;
  name)
    current ;;
  build)
    image=$(current); needs_registry "$image"
    docker build -f "$HERE/cluster/Dockerfile" -t "$image" "$HERE" ;;
  push)
    image=$(current); needs_registry "$image"
    docker push "$image" ;;
  *)
    echo "usage: $0 use <registry> | name | build | push" >&2
    exit 2 ;;
esac
