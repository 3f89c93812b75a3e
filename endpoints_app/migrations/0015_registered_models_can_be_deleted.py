# A workspace's own model version can be deleted: the row stays (deleted deployments name it), hidden.

import django.db.models.manager
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('endpoints_app', '0014_unified_keys_follow_the_secret'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='catalogmodel',
            options={'base_manager_name': 'all_objects', 'ordering': ['name', '-version']},
        ),
        migrations.AlterModelManagers(
            name='catalogmodel',
            managers=[
                ('objects', django.db.models.manager.Manager()),
                ('all_objects', django.db.models.manager.Manager()),
            ],
        ),
        migrations.AddField(
            model_name='catalogmodel',
            name='deleted_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
