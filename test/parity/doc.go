// Package parity holds differential tests: the proxy's decisions compared
// with those of the code that CRI-O, Podman and OpenShift run on the same
// input. It is a module of its own so that the references it imports
// (openshift/runtime-utils and the openshift/api and older containers/image
// it needs) stay out of the product's go.mod.
//
//   - resolve: the resolver's candidates against containers/image's own
//     FindRegistry, PullSourcesFromReference and blocked check (what
//     docker_image_src.go and docker_client.go do for a pull), over a
//     generated corpus of registries.conf files and references;
//   - short names: the resolver against what CRI-O's PullImage does with
//     containers/image's shortnames.Resolve and its short-name modes;
//   - import: the drop-in written by the import command against the
//     registries.conf the machine-config-operator renders with
//     openshift/runtime-utils EditRegistriesConfig from the same objects,
//     both read by containers/image and compared as ordered candidates per
//     reference.
package parity
