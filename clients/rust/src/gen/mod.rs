// @generated
pub mod tokenservice {
    // @@protoc_insertion_point(attribute:tokenservice.v1)
    pub mod v1 {
        include!("tokenservice/v1/tokenservice.v1.rs");
        // @@protoc_insertion_point(tokenservice.v1)
    }
}
