//! The YAML form of the IR round-trips, and the DOT form names every value.

mod common;

use resnetc::ir::{dot, text, yaml::GraphDoc};

#[test]
fn yaml_round_trips_every_spec() {
    for path in common::all_specs() {
        let g = common::compile(&path);
        let doc = GraphDoc::from_graph(&g, None);
        let yaml = doc.to_yaml().unwrap();
        let back = GraphDoc::from_yaml(&yaml).unwrap();
        assert_eq!(back, doc, "{}", path.display());
        let g2 = back.to_graph().unwrap();
        assert_eq!(text::render(&g2), text::render(&g), "{}", path.display());
    }
}

#[test]
fn yaml_reads_like_a_document() {
    let g = common::compile(&common::root().join("specs/cifar/resnet20.rn"));
    let yaml = GraphDoc::from_graph(&g, None).to_yaml().unwrap();
    assert!(yaml.contains("network: resnet20"));
    assert!(yaml.contains("- name: layer2.0.shortcut\n  op: shortcut_pad\n  stride: 2\n  pad_before: 8\n  pad_after: 8\n"));
}

#[test]
fn corrupt_yaml_is_an_error() {
    let g = common::compile(&common::root().join("specs/cifar/resnet20.rn"));
    let mut doc = GraphDoc::from_graph(&g, None);
    doc.nodes[3].inputs = vec!["nowhere".into()];
    assert!(doc
        .to_graph()
        .unwrap_err()
        .contains("unknown value `nowhere`"));
    let mut doc = GraphDoc::from_graph(&g, None);
    doc.nodes[3].shape.0[1] += 1;
    assert!(doc.to_graph().is_err());
}

#[test]
fn dot_has_a_node_per_value_and_clusters_blocks() {
    let g = common::compile(&common::root().join("specs/resnet18.rn"));
    let d = dot::render(&g);
    assert!(d.starts_with("digraph \"resnet18\" {"));
    assert_eq!(d.matches("[label=").count(), g.len());
    assert!(d.contains("subgraph \"cluster_layer2.0\""));
    assert_eq!(d.matches(" -> ").count(), g.g.edge_count());
}
