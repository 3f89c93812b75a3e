import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("endpoints_app", "0016_oidc_identity"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AllowedFolder",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("path", models.CharField(max_length=500, unique=True)),
                ("description", models.CharField(blank=True, max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["path"], "verbose_name": "allowed datastore folder"},
        ),
        migrations.CreateModel(
            name="Datastore",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=64, validators=[django.core.validators.RegexValidator(
                    "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                    "Use 1-64 letters, digits, '-' and '_', starting with a letter or digit.")])),
                ("type", models.CharField(choices=[("azure_blob", "Azure Blob"), ("s3", "S3"), ("local", "Local")],
                                          max_length=16)),
                ("description", models.TextField(blank=True)),
                ("config", models.JSONField(default=dict)),
                ("credentials_encrypted", models.TextField(blank=True)),
                ("credential_kind", models.CharField(blank=True, max_length=32)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                ("created_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                                 to=settings.AUTH_USER_MODEL)),
                ("workspace", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                                related_name="datastores", to="endpoints_app.workspace")),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.AddConstraint(
            model_name="datastore",
            constraint=models.UniqueConstraint(fields=("workspace", "name"), name="unique_datastore_name"),
        ),
        migrations.AddField(
            model_name="dataasset",
            name="datastore",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT,
                                    related_name="data_assets", to="endpoints_app.datastore"),
        ),
        migrations.AddField(
            model_name="dataasset",
            name="datastore_path",
            field=models.CharField(blank=True, max_length=1000),
        ),
        migrations.AddField(
            model_name="batchjob",
            name="outputs",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="batchjob",
            name="output_uri",
            field=models.CharField(blank=True, max_length=1000),
        ),
        migrations.AddField(
            model_name="batchjob",
            name="inputs_staged",
            field=models.BooleanField(default=True),
        ),
    ]
